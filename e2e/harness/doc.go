// Package harness runs the end-to-end tests' stand-in for an EC2 instance on
// the local machine: a Debian bookworm root file system booted with
// systemd-nspawn (systemd as PID 1, its own network namespace, real
// cloud-init reading a NoCloud seed), reachable from the host over a veth
// link with DHCP from a private dnsmasq and NAT to Debian's mirror.
//
// The recipe and its measured timings are in shared/HARNESS.md. In short:
//
//	img, _ := harness.BaseImage(ctx, "", log)            // cached by content hash
//	m, _ := harness.Boot(ctx, harness.BootOptions{Image: img, UserData: ud, InstanceID: "i-1"})
//	t.Cleanup(m.Close)                                    // undoes everything Boot made
//	out, _, _ := m.Exec(ctx, "systemctl", "is-system-running")
//	_ = m.Snapshot(ctx, "golden.tar.zst")                 // the "AMI"
//
// A machine's root is an overlay: the image unpacked once into a hidden
// folder beside its tarball (.NAME.SIZE-MTIME.root, shared read-only by
// every machine of that image) under a private upper folder. That makes a
// boot ~10 s instead of ~20 s; BootOptions.Unpack asks for a private copy.
//
// Everything here needs root and the host tools mmdebstrap, systemd-nspawn,
// nsenter, ip, dnsmasq, nft, tar and zstd, so only tests built with the e2e
// build tag use it; plain `go test ./...` never boots anything.
//
// Cleanup is layered because a test binary can die in ways that skip
// t.Cleanup (a -timeout panic, SIGKILL): Close undoes a machine exactly;
// SIGINT/SIGTERM/SIGHUP close every live machine before the process exits;
// nspawn and dnsmasq get SIGTERM when the process that started them dies; and
// the next Boot in any process reaps what a dead process left behind, from
// the state files under StateDir.
package harness
