package archive

import (
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver"
)

// Reasons a document is refused for good, the bounded values of the
// "reason" label of the archiver's dead-letter counter.
const (
	// ReasonRejected: MongoDB refused the document (validation, a bad
	// field, any write error that is not transient).
	ReasonRejected = "rejected"
	// ReasonTooLarge: the document is larger than the server takes
	// (BSONObjectTooLarge, or too large for a message).
	ReasonTooLarge = "too_large"
)

// Rejected is one document MongoDB refused for a reason that writing it
// again cannot fix.
type Rejected struct {
	// Index is the document's position in the slice given to the insert
	// (or the change's in ApplySubscriptions).
	Index  int
	Reason string
	Err    error
}

// RejectedError reports the documents of one write that MongoDB refused for
// good; every other document of the write was written.
type RejectedError struct {
	Collection string
	Documents  int
	Rejected   []Rejected
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("%d of %d %s documents refused: %v", len(e.Rejected), e.Documents, e.Collection, e.Rejected[0].Err)
}

// transientCodes are the write error codes of a server that may take the
// write later: a host unreachable or not found (6, 7), network timeouts
// (89, 9001), shutdowns (91, 11600), elections and stepdowns (189, 10107,
// 11602, 13435, 13436), time limits (50, 262), locks and write conflicts
// (24, 46, 112, 117), write concern (64), read preference (133) and stale
// sharding metadata (13388, 150). Every other write error code
// (DocumentValidationFailure 121, BadValue 2, BSONObjectTooLarge 10334,
// ...) is permanent.
var transientCodes = map[int]bool{
	6: true, 7: true, 89: true, 9001: true, 91: true, 11600: true,
	189: true, 10107: true, 11602: true, 13435: true, 13436: true,
	50: true, 262: true, 24: true, 46: true, 112: true, 117: true,
	64: true, 133: true, 13388: true, 150: true,
}

// permanentWriteError reports whether a write error of one document is one
// that writing the document again cannot fix. bwe carries the labels of
// the whole command: the server marks a retryable one RetryableWriteError.
func permanentWriteError(bwe mongo.BulkWriteException, we mongo.WriteError) bool {
	if bwe.HasErrorLabel("RetryableWriteError") || transientCodes[we.Code] {
		return false
	}
	return we.Code != 0
}

// tooLarge reports whether err failed a whole command because of a document
// that is too large for the server (the driver refuses to send it, or the
// server refuses the command with BSONObjectTooLarge).
func tooLarge(err error) bool {
	if errors.Is(err, driver.ErrDocumentTooLarge) {
		return true
	}
	var ce mongo.CommandError
	return errors.As(err, &ce) && ce.Code == codeBSONObjectTooLarge
}

// Permanent reports whether err is one that writing the same documents
// again cannot fix: documents MongoDB refused for good. Network errors,
// timeouts, a server that is not primary, write concern errors and every
// error the driver labels retryable are transient.
func Permanent(err error) bool {
	var re *RejectedError
	if errors.As(err, &re) || tooLarge(err) {
		return true
	}
	return false
}
