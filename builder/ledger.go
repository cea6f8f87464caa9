package builder

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
)

// imageLedger is the one record of the AMIs a build made or began to make,
// one per region, and the one place that removes them.
//
// The invariant: a build that ends without an artifact (failed, halted or
// cancelled, also by a Ctrl-C during the last cleanups, after the AMI steps
// had kept their AMIs) leaves no AMI and no snapshot of one.
//
//   - stepCreateImage and stepCopyImage call begin before their create call
//     and made once AWS answered with the id;
//   - their cleanups call rollback when the build failed;
//   - Builder.artifact calls rollback when the build was cancelled, since
//     Packer drops the artifact of an interrupted run.
//
// rollback removes each entry once, so the callers need not know which of
// them ran first.
type imageLedger struct {
	clients clientFor[deleteImageAPI]
	name    string // ami_name: finds an AMI whose create call did not answer
	buildID string

	mu      sync.Mutex
	entries map[string]ledgerEntry // by region
}

type ledgerEntry struct {
	id string // "" until the create call answered
	// original: the AMI of the build region. An unanswered CreateImage is
	// found by name and the wsgi:build-id tag (given in the same call); a
	// copy is tagged only once available, so it is found by name alone:
	// stepCheckAMIName made sure no other AMI of this account has it.
	original bool
}

func newImageLedger(clients clientFor[deleteImageAPI], name, buildID string) *imageLedger {
	return &imageLedger{clients: clients, name: name, buildID: buildID, entries: map[string]ledgerEntry{}}
}

// begin records that an AMI is about to be made in region.
func (l *imageLedger) begin(region string, original bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries[region] = ledgerEntry{original: original}
}

// made records the id AWS answered for the AMI of region.
func (l *imageLedger) made(region, id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entries[region]
	e.id = id
	l.entries[region] = e
}

// rollback removes every recorded AMI and its snapshots: the copies first,
// in parallel, then the original. Problems are reported for removal by hand.
func (l *imageLedger) rollback(ctx context.Context, u uiSayer) {
	l.mu.Lock()
	entries := l.entries
	l.entries = map[string]ledgerEntry{}
	l.mu.Unlock()
	remove := func(region string, e ledgerEntry) {
		c, err := l.clients(ctx, region)
		if err != nil {
			sayErr(u, fmt.Sprintf("removing the AMI in %s: %v; deregister it by hand", region, err))
			return
		}
		buildID := ""
		if e.original {
			buildID = l.buildID
		}
		removeImage(ctx, u, c, region, e.id, l.name, buildID)
	}
	var wg sync.WaitGroup
	for _, region := range slices.Sorted(maps.Keys(entries)) {
		if e := entries[region]; !e.original {
			wg.Add(1)
			go func() {
				defer wg.Done()
				remove(region, e)
			}()
		}
	}
	wg.Wait()
	for _, region := range slices.Sorted(maps.Keys(entries)) {
		if e := entries[region]; e.original {
			remove(region, e)
		}
	}
}
