// Package harness runs the end-to-end tests' stand-in for an EC2 instance on
// the local machine: a Debian root file system (trixie by default, bookworm
// too) with the package set of Debian's EC2 image, booted with
// systemd-nspawn (systemd as PID 1, its own network namespace, real
// cloud-init reading a NoCloud seed), reachable from the host over a veth
// link with DHCP from a private dnsmasq and NAT to Debian's mirror.
//
// The recipe and its measured timings are in shared/HARNESS.md. In short:
//
//	harness.ForEachRelease(t, func(t *testing.T, r harness.Release) { // $WSGI_E2E_RELEASES
//		img, _ := harness.BaseImage(ctx, r, log)               // cached by content hash
//		moto, _ := awsproxy.StartMoto(ctx, logPath)
//		motoURL, _ := harness.Publish(moto.URL)                 // http://10.213.0.1:PORT, from any machine
//		m, _ := harness.Boot(ctx, harness.BootOptions{Image: img, UserData: ud, InstanceID: "i-1"})
//		t.Cleanup(m.Close)                                      // undoes everything Boot made
//		out, _, _ := m.Exec(ctx, "systemctl", "is-system-running")
//		_ = m.IMDS().Calls()                                    // what asked the metadata service
//		_ = m.Snapshot(ctx, "golden.tar.zst")                   // the "AMI"
//	})
//
// Each machine has an instance metadata service of its own (IMDSv2, see
// IMDS), served from the test process on a loopback port; the machine's
// traffic to 169.254.169.254:80 reaches it through a DNAT rule in the
// machine's own nft table on its ve- link (with route_localnet on that link,
// which goes with it). Servers the test runs on loopback, such as moto,
// reach the machines the same way through Publish. Nothing is added to a
// host interface, and a machine's traffic to private addresses is never
// forwarded off the host.
//
// A machine's root is an overlay: the image unpacked once into a hidden
// folder beside its tarball (.NAME.SIZE-MTIME.root, shared read-only by
// every machine of that image) under a private upper folder. That makes a
// boot ~10 s instead of ~20 s; BootOptions.Unpack asks for a private copy.
// After each mount, the folders of the image's earlier versions (a tarball
// rewritten since) go, unless a process holds their lock or an overlay
// still reads them.
//
// Everything here needs root and the host tools mmdebstrap, systemd-nspawn,
// nsenter, ip, dnsmasq, nft, tar and zstd, so only tests built with the e2e
// build tag use it; plain `go test ./...` never boots anything.
//
// Cleanup is layered because a test binary can die in ways that skip
// t.Cleanup (a -timeout panic, SIGKILL): Close undoes a machine exactly;
// SIGINT/SIGTERM/SIGHUP close every live machine and then run the
// AtInterrupt functions (moto registers its Close there) before the process
// exits;
// nspawn and dnsmasq get SIGTERM when the process that started them dies; and
// the next Boot in any process reaps what a dead process left behind, from
// the state files under StateDir.
package harness
