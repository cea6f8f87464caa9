package harness

import "errors"

// ErrCloudInit is wrapped by the error of WaitCloudInit (and Boot) when
// cloud-init finished but reported errors in /run/cloud-init/result.json.
var ErrCloudInit = errors.New("cloud-init reported errors")
