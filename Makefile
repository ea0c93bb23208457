# convert: move a VM's system disk into the cloud. See README.md.
GO        ?= go
BIN       ?= bin/convert
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
DEMO_DIR  ?= demo-out
# The test suite's own limit; CI has 90 minutes, the suite aims at well under 15.
TEST_TIMEOUT ?= 20m

.PHONY: all build test test-short check cross man completions install uninstall release image demo bench gobench fuzz faults clean

all: build

# The version of a release is its tag (vX.Y.Z on the commit); untagged
# builds keep the version in cmd/convert/version.go. convert version also
# tells the commit (from the build info) and the build date.
VERSION    ?= $(shell git describe --tags --exact-match 2>/dev/null | sed 's/^v//')
BUILD_DATE ?= $(shell date -u $${SOURCE_DATE_EPOCH:+-d @$$SOURCE_DATE_EPOCH} +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS    := -X main.buildDate=$(BUILD_DATE) $(if $(VERSION),-X main.version=$(VERSION))

build:
	$(GO) build -trimpath -buildvcs=auto -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/convert

# Man pages (section 1, one per command) and shell completions, made by the
# binary from its own command tree, into bin/.
man: build
	rm -rf bin/man && $(BIN) gen-man bin/man/man1

completions: build
	mkdir -p bin/completions
	$(BIN) completion bash > bin/completions/convert.bash
	$(BIN) completion zsh > bin/completions/_convert
	$(BIN) completion fish > bin/completions/convert.fish

# make install [PREFIX=/usr/local] [DESTDIR=...]: the binary, its man pages
# and its bash, zsh and fish completions. ImageMagick 6 also installs a
# command named convert: give a PREFIX whose bin comes first in PATH (the
# default /usr/local/bin comes before /usr/bin), or see README.md.
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
DATADIR ?= $(PREFIX)/share
install: build man completions
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 \
	  $(DESTDIR)$(DATADIR)/bash-completion/completions $(DESTDIR)$(DATADIR)/zsh/site-functions \
	  $(DESTDIR)$(DATADIR)/fish/vendor_completions.d
	install -m 755 $(BIN) $(DESTDIR)$(BINDIR)/convert
	install -m 644 bin/man/man1/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 644 bin/completions/convert.bash $(DESTDIR)$(DATADIR)/bash-completion/completions/convert
	install -m 644 bin/completions/_convert $(DESTDIR)$(DATADIR)/zsh/site-functions/_convert
	install -m 644 bin/completions/convert.fish $(DESTDIR)$(DATADIR)/fish/vendor_completions.d/convert.fish

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/convert $(DESTDIR)$(MANDIR)/man1/convert.1 $(DESTDIR)$(MANDIR)/man1/convert-*.1 \
	  $(DESTDIR)$(DATADIR)/bash-completion/completions/convert $(DESTDIR)$(DATADIR)/zsh/site-functions/_convert \
	  $(DESTDIR)$(DATADIR)/fish/vendor_completions.d/convert.fish

# Static release binaries for the six platforms (no cgo, no build paths,
# symbols stripped) into dist/, with their SHA256SUMS.
RELEASE_VERSION = $(or $(VERSION),$(shell sed -n 's/^\tversion *= *"\(.*\)"/\1/p' cmd/convert/version.go))
release:
	rm -rf dist && mkdir -p dist
	@for p in $(PLATFORMS); do \
	  os=$${p%/*}; arch=$${p#*/}; ext=; [ $$os = windows ] && ext=.exe; \
	  out=dist/convert-$(RELEASE_VERSION)-$$os-$$arch$$ext; echo "release: $$out"; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -buildvcs=auto \
	    -ldflags "$(RELEASE_LDFLAGS)" -o $$out ./cmd/convert || exit 1; \
	done
	cd dist && sha256sum convert-* > SHA256SUMS
RELEASE_LDFLAGS = -s -w $(LDFLAGS) -X main.version=$(RELEASE_VERSION)

# The container image (Containerfile): the static Linux release binary of
# this checkout, built here as make release builds it, on FROM scratch with
# the host's CA certificates and a user that is not root. Nothing is built
# or pulled inside the image. Built with podman, or docker when podman is
# not installed (CONTAINER=docker to choose), tagged $(IMAGE):$(IMAGE_TAG);
# README.md tells how to push it to a registry.
IMAGE      ?= convert
IMAGE_TAG  ?= $(RELEASE_VERSION)
IMAGE_ARCH ?= $(shell $(GO) env GOARCH)
CONTAINER  ?= $(shell command -v podman 2>/dev/null || command -v docker 2>/dev/null)
CA_BUNDLE  ?= /etc/ssl/certs/ca-certificates.crt
IMAGE_BIN   = dist/convert-$(RELEASE_VERSION)-linux-$(IMAGE_ARCH)
image:
	@[ -n "$(CONTAINER)" ] || { echo "make image: neither podman nor docker is installed (apt-get install podman)"; exit 1; }
	@[ -r "$(CA_BUNDLE)" ] || { echo "make image: no CA bundle at $(CA_BUNDLE) (apt-get install ca-certificates, or CA_BUNDLE=FILE)"; exit 1; }
	@mkdir -p dist && echo "image: $(IMAGE_BIN)"
	CGO_ENABLED=0 GOOS=linux GOARCH=$(IMAGE_ARCH) $(GO) build -trimpath -buildvcs=auto -ldflags "$(RELEASE_LDFLAGS)" -o $(IMAGE_BIN) ./cmd/convert
	rm -rf bin/image && mkdir -p bin/image/etc bin/image/home
	cp $(IMAGE_BIN) bin/image/convert
	cp $(CA_BUNDLE) bin/image/ca-certificates.crt
	printf 'root:x:0:0:root:/:/sbin/nologin\nconvert:x:65532:65532:convert:/home/convert:/sbin/nologin\n' > bin/image/etc/passwd
	printf 'root:x:0:\nconvert:x:65532:\n' > bin/image/etc/group
	$(CONTAINER) build --platform linux/$(IMAGE_ARCH) --build-arg VERSION=$(RELEASE_VERSION) \
	  -f Containerfile -t $(IMAGE):$(IMAGE_TAG) bin/image
	@echo "image: $(IMAGE):$(IMAGE_TAG) ($$($(CONTAINER) image inspect --format '{{.Size}}' $(IMAGE):$(IMAGE_TAG)) bytes)"

# Everything, with the race detector: readers against qemu-img, the writer,
# the pipeline, the CLI end to end.
test:
	$(GO) test -race -timeout $(TEST_TIMEOUT) ./...

# The quick subset: skips the slow suites.
test-short:
	$(GO) test -short ./...

# gofmt, go vet, staticcheck and a tidy go.mod.
check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	cp go.mod /tmp/go.mod.check; cp go.sum /tmp/go.sum.check
	$(GO) mod tidy
	@if ! diff -q go.mod /tmp/go.mod.check >/dev/null || ! diff -q go.sum /tmp/go.sum.check >/dev/null; then echo "go.mod/go.sum are not tidy (run go mod tidy)"; cp /tmp/go.mod.check go.mod; cp /tmp/go.sum.check go.sum; exit 1; fi

# The cross-compile matrix: the command links, and every package (tests
# included) builds and passes go vet, for each GOOS/GOARCH pair of a
# release. The Linux-only calls (SEEK_DATA/SEEK_HOLE, sync_file_range,
# RLIMIT_NOFILE, SIGHUP/SIGPIPE, /proc) have build-tagged fallbacks.
PLATFORMS ?= linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64
cross:
	@for p in $(PLATFORMS); do \
	  echo "cross: $$p"; \
	  GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) build -o /dev/null ./cmd/convert || exit 1; \
	  GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) vet ./... || exit 1; \
	done

# Convert the bundled sample (a 64 MiB MBR + ext4 disk as compressed QCOW2)
# to a sparse RAW file, then start a local S3 server (versitygw, installed
# on first use with go install) and upload the sample to it as QCOW2
# (the default for uploads), printing the URLs and the ImportImage command a
# real upload would give.
demo: build
	@mkdir -p $(DEMO_DIR)
	$(BIN) info testdata/sample.qcow2
	$(BIN) testdata/sample.qcow2 -O raw -o $(DEMO_DIR)/sample.raw
	@echo "demo: wrote $(DEMO_DIR)/sample.raw ($$(du -k $(DEMO_DIR)/sample.raw | cut -f1) KiB on disk for 64 MiB virtual)"
	@set -e; eval "$$(.ci/versitygw.sh)"; trap '.ci/versitygw.sh stop' EXIT; \
	  $(GO) run ./internal/demobucket demo; \
	  echo "demo: uploading to the local S3 server at $$CONVERT_TEST_S3_ENDPOINT"; \
	  $(BIN) testdata/sample.qcow2 -o s3://demo/images/sample.qcow2 --endpoint $$CONVERT_TEST_S3_ENDPOINT --verify --image-name sample

# The benchmark suite: generated disks in every source format, convert vs
# qemu-img, interleaved, median of 3, and the upload end to end against
# qemu-img + aws s3 cp on a local versitygw; results under bench/results/.
# The link cases upload a 2 GiB sparse VMDK through a tc-shaped loopback in
# a network namespace, at each of BENCH_LINKS (they need root, and take
# about 45 minutes at --runs 3; BENCH_LINKS= leaves them out).
# BENCH_FLAGS=--size 100G for a large-disk run; BENCH_FLAGS="--cases link"
# for the link cases alone.
BENCH_FLAGS ?=
BENCH_LINKS ?= 1gbit,100mbit
bench: build
	bench/setup.sh
	@set -e; eval "$$(.ci/versitygw.sh)"; trap '.ci/versitygw.sh stop' EXIT; \
	  $(GO) run ./bench/cmd/benchsuite --convert $(BIN) --endpoint $$CONVERT_TEST_S3_ENDPOINT --links "$(BENCH_LINKS)" $(BENCH_FLAGS)

# Go benchmarks of the pipeline and the readers.
gobench:
	$(GO) test -run '^$$' -bench . -benchtime 3x ./...

# Every fuzz target: FUZZTIME each, and the differential targets (FuzzDiff:
# mutated images read by us and by qemu-img, reader/readertest/diff.go)
# DIFF_FUZZTIME each. A failing input lands in the package's
# testdata/fuzz/ and replays with `go test`.
FUZZTIME ?= 20s
DIFF_FUZZTIME ?= 3m
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    t=$(FUZZTIME); [ "$$f" = FuzzDiff ] && t=$(DIFF_FUZZTIME); \
	    echo "== $$pkg $$f ($$t)"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $$t $$pkg || exit 1; \
	  done; \
	done

# The fault campaign (cmd/convert/uploadtest/faults_test.go, build tag
# faults): INT/TERM/HUP/KILL at random points of file, stdout and upload
# runs, a full file system (a 16 MiB tmpfs: needs root), a server gone
# mid-upload, a wrong ETag; prints one line per run and any FINDING.
faults:
	@set -e; eval "$$(.ci/versitygw.sh)"; trap '.ci/versitygw.sh stop' EXIT; \
	  $(GO) test -tags faults -run '^TestFaults$$' -count 1 -v -timeout 30m ./cmd/convert/uploadtest/

clean:
	rm -rf bin dist $(DEMO_DIR)
