package main

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Flag groups of the help: a command's flags are listed under the title of
// their group, groups in the order their first flag was registered. A new
// group is a title here and a flagGroup call around the flags it holds.
const (
	groupInput  = "Input"
	groupOutput = "Output"
	groupQCOW2  = "QCOW2 output (-O qcow2, the default for uploads)"
	groupCheck  = "Import check"
	groupUpload = "Upload (-o s3://BUCKET/KEY)"
	// groupSourceStore: the store flags of info and check.
	groupSourceStore = "Store (s3:// sources)"
	groupImage       = "Image fields of the ImportImage request"
	groupImport      = "Import into the cloud"
	groupPerf        = "Performance"
	groupBatch       = "Batch"
	groupQueue       = "Queue (many nodes)"
	groupTrust       = "What a message may make this worker do"
	groupDisplay     = "Display"
	groupObserve     = "Metrics and logs (for a fleet)"
)

// groupKey is the flag annotation that holds a flag's group.
const groupKey = "convert_group"

// flagGroup puts the flags that register adds to fs into the help group
// title. Flags registered outside any group are listed last, as "Flags"
// (or "Other flags" when the command has groups).
func flagGroup(fs *pflag.FlagSet, title string, register func()) {
	before := map[string]bool{}
	fs.VisitAll(func(f *pflag.Flag) { before[f.Name] = true })
	register()
	fs.VisitAll(func(f *pflag.Flag) {
		if !before[f.Name] {
			if f.Annotations == nil {
				f.Annotations = map[string][]string{}
			}
			f.Annotations[groupKey] = []string{title}
		}
	})
}

func groupOf(f *pflag.Flag) string {
	if g := f.Annotations[groupKey]; len(g) > 0 {
		return g[0]
	}
	return ""
}

// helpWidth is the width flag descriptions are wrapped to: fixed, so that
// the help reads the same everywhere (and its golden files stay put).
const helpWidth = 100

// groupedFlagUsages lists the visible flags of fs by group.
func groupedFlagUsages(fs *pflag.FlagSet) string {
	var order []string
	sets := map[string]*pflag.FlagSet{}
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		g := groupOf(f)
		if sets[g] == nil {
			sets[g] = pflag.NewFlagSet(g, pflag.ContinueOnError)
			sets[g].SortFlags = false
			order = append(order, g)
		}
		sets[g].AddFlag(f)
	})
	// Ungrouped flags (help, version, a command's own few) come last.
	sort.SliceStable(order, func(i, j int) bool { return order[i] != "" && order[j] == "" })
	var b strings.Builder
	for _, g := range order {
		title := g + " flags"
		if g == "" {
			title = "Flags"
			if len(order) > 1 {
				title = "Other flags"
			}
		}
		fmt.Fprintf(&b, "\n%s:\n%s", title, flagLines(sets[g], helpWidth))
	}
	return b.String()
}

// flagLines lists the flags of fs as pflag does, aligned and wrapped to
// width, but with a bool flag as plain --name and a default shown only
// when it is not the zero value.
func flagLines(fs *pflag.FlagSet, width int) string {
	type line struct{ name, usage string }
	var lines []line
	col := 0
	fs.VisitAll(func(f *pflag.Flag) {
		name := "      --" + f.Name
		if f.Shorthand != "" {
			name = "  -" + f.Shorthand + ", --" + f.Name
		}
		varname, use := pflag.UnquoteUsage(f)
		if f.Value.Type() != "bool" && varname != "" {
			name += " " + varname
		}
		switch f.DefValue {
		case "", "0", "false", "[]", "0s":
		default:
			if f.Value.Type() == "string" {
				use += fmt.Sprintf(" (default %q)", f.DefValue)
			} else {
				use += fmt.Sprintf(" (default %s)", f.DefValue)
			}
		}
		lines = append(lines, line{name, use})
		col = max(col, len(name))
	})
	var b strings.Builder
	indent := strings.Repeat(" ", col+3)
	for _, l := range lines {
		b.WriteString(fmt.Sprintf("%-*s   ", col, l.name))
		b.WriteString(wrapWords(l.usage, width-col-3, indent))
		b.WriteString("\n")
	}
	return b.String()
}

// wrapWords wraps s to lines of at most width characters (a longer word
// stays whole), the lines after the first indented.
func wrapWords(s string, width int, indent string) string {
	width = max(width, 30)
	var b strings.Builder
	n := 0
	for i, w := range strings.Fields(s) {
		switch {
		case i == 0:
		case n+1+len(w) > width:
			b.WriteString("\n" + indent)
			n = 0
		default:
			b.WriteString(" ")
			n++
		}
		b.WriteString(w)
		n += len(w)
	}
	return b.String()
}

// usage is every command's usage: how to call it, its subcommands, its
// flags by group, its examples, and where to read more. Help (--help,
// convert help CMD) prints the command's long description, then this, on
// stdout.
func usage(c *cobra.Command) string {
	var b strings.Builder
	b.WriteString("Usage:\n")
	if c.Runnable() {
		for _, l := range strings.Split(c.UseLine(), "\n") {
			fmt.Fprintf(&b, "  %s\n", l)
		}
	}
	if c.HasAvailableSubCommands() {
		fmt.Fprintf(&b, "  %s COMMAND [flags]\n", c.CommandPath())
		b.WriteString("\nCommands:\n")
		width := 0
		for _, s := range c.Commands() {
			if s.IsAvailableCommand() || s.Name() == "help" {
				width = max(width, len(s.Name()))
			}
		}
		for _, s := range c.Commands() {
			if s.IsAvailableCommand() || s.Name() == "help" {
				fmt.Fprintf(&b, "  %-*s  %s\n", width, s.Name(), s.Short)
			}
		}
	}
	if c.HasAvailableFlags() {
		b.WriteString(groupedFlagUsages(c.Flags()))
	}
	if c.Example != "" {
		fmt.Fprintf(&b, "\nExamples:\n%s\n", strings.TrimRight(c.Example, "\n"))
	}
	if exit := c.Annotations[exitCodesKey]; exit != "" {
		fmt.Fprintf(&b, "\n%s", exit)
	}
	if c.HasAvailableSubCommands() {
		helpPath := strings.TrimSpace(c.Root().Name() + " help " + strings.TrimPrefix(c.CommandPath(), c.Root().Name()))
		fmt.Fprintf(&b, "\nRun \"%s COMMAND\" (or %s COMMAND --help) for more about a command.\n", helpPath, c.CommandPath())
	}
	return b.String()
}

// exitCodesKey is the command annotation with its exit codes, for the help.
const exitCodesKey = "convert_exit_codes"

// setHelp gives the command tree its help: on stdout, the long description
// and the usage; errors never print it (SilenceUsage): a mistake gets one
// line that says what to do.
func setHelp(root *cobra.Command) {
	root.SetUsageFunc(func(c *cobra.Command) error {
		_, err := fmt.Fprint(c.OutOrStderr(), usage(c))
		return err
	})
	root.SetHelpFunc(func(c *cobra.Command, _ []string) {
		w := c.OutOrStdout()
		if s := strings.TrimSpace(c.Long); s != "" {
			fmt.Fprintf(w, "%s\n\n", s)
		} else if c.Short != "" {
			fmt.Fprintf(w, "%s.\n\n", upperFirst(c.Short))
		}
		fmt.Fprint(w, usage(c))
	})
	root.SetHelpCommand(&cobra.Command{
		Use:   "help [COMMAND]",
		Short: "help about any command",
		Args:  cobra.ArbitraryArgs,
		ValidArgsFunction: func(c *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
			var names []cobra.Completion
			if len(args) == 0 {
				for _, s := range c.Root().Commands() {
					if s.IsAvailableCommand() {
						names = append(names, cobra.CompletionWithDesc(s.Name(), s.Short))
					}
				}
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(c *cobra.Command, args []string) error {
			target := c.Root()
			for _, a := range args {
				next := findSub(target, a)
				if next == nil {
					return usageError{fmt.Errorf("no help topic %q: %s", strings.Join(args, " "), suggest(target, a, "the commands are listed by "+target.CommandPath()+" --help"))}
				}
				target = next
			}
			// As if CMD --help ran: with the help flag listed.
			target.InitDefaultHelpFlag()
			c.Root().HelpFunc()(target, nil)
			return nil
		},
	})
	root.SetFlagErrorFunc(flagError)
}

// findSub is the subcommand of c named (or aliased) name.
func findSub(c *cobra.Command, name string) *cobra.Command {
	for _, s := range c.Commands() {
		if s.Name() == name || s.HasAlias(name) {
			return s
		}
	}
	return nil
}

// suggestionsFor are the subcommands of c within two edits of name, or
// that start with it.
func suggestionsFor(c *cobra.Command, name string) []string {
	if c.SuggestionsMinimumDistance <= 0 {
		c.SuggestionsMinimumDistance = 2
	}
	return c.SuggestionsFor(name)
}

// suggest names the subcommands of c close to name, or says otherwise.
func suggest(c *cobra.Command, name, otherwise string) string {
	s := suggestionsFor(c, name)
	if len(s) == 0 {
		return otherwise
	}
	return "did you mean " + orList(s) + "?"
}

// orList quotes names and joins them with commas and "or".
func orList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// flagError is a command-line flag that does not parse, in one line: the
// flag, what is wrong, and for a mistyped name the flags it may have
// meant.
func flagError(c *cobra.Command, err error) error {
	msg := err.Error()
	var name string
	switch {
	case strings.HasPrefix(msg, "unknown flag: --"):
		name = strings.TrimPrefix(msg, "unknown flag: --")
		msg = "unknown flag --" + name
		if name == "output" && c.Flags().Lookup("json") != nil {
			// qemu-img info --output=json
			return usageError{fmt.Errorf("%s: %s prints JSON with --json (qemu-img's --output=json)", msg, c.CommandPath())}
		}
	case strings.HasPrefix(msg, "unknown shorthand flag: "):
		// "unknown shorthand flag: 'x' in -x"
		msg = "unknown flag " + msg[strings.LastIndex(msg, " ")+1:]
		if _, letter, ok := strings.Cut(err.Error(), "'"); ok && letter != "" && !c.HasParent() {
			if hint := qemuImgFlags[letter[:1]]; hint != "" {
				return usageError{fmt.Errorf("unknown flag -%s: %s", letter[:1], hint)}
			}
		}
	default:
		// invalid argument "lots" for "--workers" flag: strconv.ParseInt: ...
		if m := badValue.FindStringSubmatch(msg); m != nil {
			if f := c.Flags().Lookup(m[2]); f != nil {
				return usageError{fmt.Errorf("--%s %s: %s", m[2], m[1], wantValue(f))}
			}
		}
	}
	hint := fmt.Sprintf("%s --help lists the flags", c.CommandPath())
	if name != "" {
		if close := closeFlags(c.Flags(), name); len(close) > 0 {
			for i := range close {
				close[i] = "--" + close[i]
			}
			hint = "did you mean " + strings.Join(close, " or ") + "?"
		} else if c.HasParent() && c.Root().Flags().Lookup(name) != nil {
			hint = fmt.Sprintf("--%s is a flag of a conversion, not of %s", name, c.CommandPath())
		}
	}
	return usageError{fmt.Errorf("%s: %s", msg, hint)}
}

// qemuImgFlags say what qemu-img convert's flags that convert has no
// shorthand for become here, or why they mean nothing here.
var qemuImgFlags = map[string]string{
	"m": "qemu-img's -m (parallel coroutines) is --workers here",
	"W": "qemu-img's -W (out-of-order writes) has no meaning here: blocks are read in parallel (--workers) and always written in order, so a file lands whole and an upload's parts are deterministic",
	"S": "qemu-img's -S (the shortest zero run made sparse) has no meaning here: every all-zero block of --block-size becomes a hole (a file), a skipped cluster (QCOW2) or a server-side copy (an upload)",
	"n": "qemu-img's -n (write into an existing target) has no meaning here: the output is always made anew and lands by rename (or completes as an upload), never half-written over an old one",
	"t": "qemu-img's -t (the target's cache mode) has no meaning here: the output is written through the page cache and synced once, before it lands",
	"T": "qemu-img's -T (the source's cache mode) has no meaning here: the source is read through the page cache",
}

var badValue = regexp.MustCompile(`^invalid argument "(.*)" for "(?:-\w, )?--([\w-]+)" flag`)

// wantValue says what a flag takes, for a value that did not parse.
func wantValue(f *pflag.Flag) string {
	switch f.Value.Type() {
	case "int", "int64", "int32", "uint", "uint64", "uint32":
		return "give a whole number"
	case "duration":
		return "give a duration such as 90s, 30m or 6h"
	case "bool":
		return "give true or false"
	}
	return "not a valid " + f.Value.Type()
}

// closeFlags are the visible flags of fs within two edits of name, or
// that start with it.
func closeFlags(fs *pflag.FlagSet, name string) []string {
	var out []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		if editDistance(name, f.Name) <= 2 || (len(name) >= 3 && strings.HasPrefix(f.Name, name)) {
			out = append(out, f.Name)
		}
	})
	if len(out) > 3 {
		out = out[:3]
	}
	return out
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// exactArgs wants n arguments; what a command says when it gets others.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{fmt.Errorf("%s, got %d (%s --help)", what, len(args), c.CommandPath())}
		}
		return nil
	}
}

// missingFile reports whether name is no file, for the guesses made about
// a first argument that may be a mistyped command.
func missingFile(name string) bool {
	_, err := os.Stat(name)
	return errors.Is(err, os.ErrNotExist)
}
