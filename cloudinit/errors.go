package cloudinit

import "errors"

// Sentinel errors, for callers that tell the cases apart with errors.Is.
var (
	// ErrTooLarge: the user data is above EC2's 16,384-byte limit.
	ErrTooLarge = errors.New("user data too large")
	// ErrOutput: the rendered payload does not read back as it should (a bug, not an input problem).
	ErrOutput = errors.New("rendered payload is inconsistent")
)
