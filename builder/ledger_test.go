package builder

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// One rollback serves every caller: a second one (another step's cleanup,
// then Builder.artifact after an interrupt) finds nothing left to do.
func TestImageLedgerRollbackOnce(t *testing.T) {
	cloud := newFakeCloud()
	c := testConfig(t, map[string]interface{}{"ami_regions": []string{"us-east-1"}})
	state, earlier := copyState(t, cloud, c)
	cp := &stepCopyImage{EC2: clientAs[copyImageAPI](cloud.regional()), Cfg: c, SourceRegion: "eu-west-1", Wait: waitConfig{Delay: time.Millisecond}}
	if cp.Run(context.Background(), state) != multistep.ActionContinue {
		t.Fatal(stateError(state))
	}
	ledger := get[*imageLedger](state, keyLedger)
	u := &recUI{}
	ledger.rollback(context.Background(), u)
	before := len(cloud.Calls())
	ledger.rollback(context.Background(), u)
	if after := len(cloud.Calls()); after != before {
		t.Fatalf("second rollback made %d calls: %v", after-before, cloud.Calls()[before:])
	}
	earlier[0].Cleanup(state) // the instance
	if left := cloud.leftovers(); len(left) != 0 {
		t.Fatalf("left %v", left)
	}
	text := u.text()
	if i, j := strings.Index(text, "in us-east-1"), strings.Index(text, "in eu-west-1"); i < 0 || j < 0 || i > j {
		t.Fatalf("the copy must go before the original:\n%s", text)
	}
}
