package queue

import (
	"fmt"
	"time"

	"vmimport/batch"
)

// WorkerEventKind says what a WorkerEvent reports.
type WorkerEventKind int

// Worker event kinds.
const (
	// WorkerNote: a line about the worker itself (it starts taking disks,
	// waits for the queue, stops); no disk.
	WorkerNote WorkerEventKind = iota
	// Received: a message of a disk arrived; Delivery > 1 is a redelivery
	// (its worker died, or it failed for a reason worth a retry, or it
	// was handed back).
	Received
	// TakenOver: the disk was still running under an earlier delivery that
	// never ended (its worker died or stopped answering): From and
	// FromDelivery name it. This delivery goes on from what it left.
	TakenOver
	// Started: the lease is taken and the status says running; the disk's
	// job starts.
	Started
	// DiskEvent: Batch is an event of the disk's run (the batch layer's:
	// started, the job's events, done with its outcome).
	DiskEvent
	// Note: a line about the delivery (a kept upload aborted, a status
	// that could not be written).
	Note
	// Ended: the delivery ended as End says; Outcome is the disk's
	// outcome when it has one (done, skipped, failed).
	Ended
)

// End is how a delivery ended.
type End string

// Ends of a delivery.
const (
	EndDone       End = "done"        // converted; the message acknowledged
	EndSkipped    End = "skipped"     // found done by an earlier run
	EndFailed     End = "failed"      // failed for good (a broken image, a bad setting, out of deliveries)
	EndRefused    End = "refused"     // outside the worker's limits: failed for good, nothing done
	EndRetry      End = "retry"       // failed for a reason worth a retry: back to the queue with a delay
	EndHandedBack End = "handed_back" // the worker is stopping: back to the queue, its upload kept
	EndBusy       End = "busy"        // another worker holds the output's lease: back to the queue for later
	EndLost       End = "lost"        // the lease went to another worker: nothing shared touched
	EndUnreadable End = "unreadable"  // a message that is no disk: dropped
)

// WorkerEvent is one thing that happened in a worker, for logs and
// metrics (WorkerOptions.Events). The disk's fields are set for every kind
// but WorkerNote.
type WorkerEvent struct {
	Kind   WorkerEventKind
	Time   time.Time
	Worker string
	// Key is the disk's key in the queue; Line its line in the manifest.
	Key  string
	Line int
	// Source (credentials redacted) and Output of the disk.
	Source, Output string
	// Delivery is the delivery of the disk's message, from 1.
	Delivery int
	// Message is what a text log says of the event.
	Message string
	// Batch is a DiskEvent's event.
	Batch *batch.Event
	// End is how the delivery Ended; Outcome the disk's outcome, if any;
	// RetryIn the delay of an EndRetry.
	End     End
	Outcome *batch.Outcome
	RetryIn time.Duration
	// From and FromDelivery are the worker and the delivery a TakenOver
	// disk was running under.
	From         string
	FromDelivery int
}

// Text is the event as a text log prints it (without the time).
func (e *WorkerEvent) Text() string {
	if e.Kind == WorkerNote || e.Key == "" {
		return fmt.Sprintf("worker %s: %s", e.Worker, e.Message)
	}
	return fmt.Sprintf("worker %s: %s -> %s: %s", e.Worker, e.Source, e.Output, e.Message)
}

// tell hands e to the worker's Events and its text to Log.
func (w *worker) tell(e WorkerEvent) {
	e.Time, e.Worker = time.Now(), w.o.Name
	if w.o.Events != nil {
		w.o.Events(e)
	}
	if e.Message != "" {
		w.o.Log(e.Text())
	}
}

// note tells a line about the worker.
func (w *worker) note(format string, args ...any) {
	w.tell(WorkerEvent{Kind: WorkerNote, Message: fmt.Sprintf(format, args...)})
}
