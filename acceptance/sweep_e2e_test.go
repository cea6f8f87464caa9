//go:build e2e

package acceptance

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/awsproxy"
)

// TestSweepMoto makes what an acceptance run leaves when it is killed (the boot instance, a build
// instance, the launch template, an AMI with its snapshot, the builder's key pair and security
// group, the boot check's group) plus the same for another run, in moto, then sweeps one run and
// checks that exactly its resources are gone.
func TestSweepMoto(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	moto, err := awsproxy.StartMoto(ctx, filepath.Join(t.TempDir(), "moto.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer moto.Close()
	c := ec2.New(ec2.Options{
		Region:       "eu-west-1",
		BaseEndpoint: aws.String(moto.URL),
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
	})

	const mine, other = "20261128t000000aaaaaaaa", "20261128t000000bbbbbbbb"
	made := map[string]runResources{}
	for _, id := range []string{mine, other} {
		made[id] = makeRun(ctx, t, c, id)
	}

	var logged []string
	if err := sweep(ctx, c, mine, func(f string, a ...any) { logged = append(logged, f) }); err != nil {
		t.Fatalf("sweep: %v", err)
	}
	if len(logged) == 0 {
		t.Error("sweep logged nothing")
	}

	for id, r := range made {
		wantGone := id == mine
		for _, inst := range r.instances {
			out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{inst}})
			if err != nil {
				t.Fatal(err)
			}
			state := out.Reservations[0].Instances[0].State.Name
			if gone := state == ec2types.InstanceStateNameTerminated; gone != wantGone {
				t.Errorf("run %s: instance %s is %s", id, inst, state)
			}
		}
		lts, err := c.DescribeLaunchTemplates(ctx, &ec2.DescribeLaunchTemplatesInput{Filters: []ec2types.Filter{{Name: aws.String("launch-template-name"), Values: []string{templateName(id)}}}})
		if err != nil {
			t.Fatal(err)
		}
		if gone := len(lts.LaunchTemplates) == 0; gone != wantGone {
			t.Errorf("run %s: launch template gone=%v, want %v", id, gone, wantGone)
		}
		imgs, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: []ec2types.Filter{{Name: aws.String("name"), Values: []string{amiName(id)}}}})
		if err != nil {
			t.Fatal(err)
		}
		if gone := len(imgs.Images) == 0; gone != wantGone {
			t.Errorf("run %s: AMI gone=%v, want %v", id, gone, wantGone)
		}
		snaps, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: []ec2types.Filter{{Name: aws.String("snapshot-id"), Values: r.snapshots}}})
		if err != nil {
			t.Fatal(err)
		}
		if gone := len(snaps.Snapshots) == 0; gone != wantGone {
			t.Errorf("run %s: snapshots %v gone=%v, want %v", id, r.snapshots, gone, wantGone)
		}
		keys, err := c.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{Filters: []ec2types.Filter{{Name: aws.String("key-name"), Values: []string{r.keyName}}}})
		if err != nil && !isCode(err, "InvalidKeyPair.NotFound") {
			t.Fatal(err)
		}
		if gone := err != nil || len(keys.KeyPairs) == 0; gone != wantGone {
			t.Errorf("run %s: key pair %s gone=%v, want %v", id, r.keyName, gone, wantGone)
		}
		for _, g := range r.groups {
			_, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{g}})
			if err != nil && !isCode(err, "InvalidGroup.NotFound") {
				t.Fatal(err)
			}
			if gone := err != nil; gone != wantGone {
				t.Errorf("run %s: security group %s gone=%v, want %v", id, g, gone, wantGone)
			}
		}
	}

	// A second sweep of the same run finds nothing and is not an error.
	if err := sweep(ctx, c, mine, t.Logf); err != nil {
		t.Errorf("second sweep: %v", err)
	}
}

type runResources struct {
	instances, snapshots, groups []string
	keyName                      string
}

// makeRun creates, for run id, the resources an interrupted acceptance run leaves, tagged the way
// the template and the builder tag them.
func makeRun(ctx context.Context, t *testing.T, c *ec2.Client, id string) runResources {
	t.Helper()
	var r runResources
	tagSpec := func(rt ec2types.ResourceType, tags ...ec2types.Tag) []ec2types.TagSpecification {
		return []ec2types.TagSpecification{{ResourceType: rt, Tags: tags}}
	}
	runT := ec2types.Tag{Key: aws.String(runTag), Value: aws.String(id)}
	nameT := ec2types.Tag{Key: aws.String("Name"), Value: aws.String(builderTempName(id))}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	imgs, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{})
	must(err)
	src := aws.ToString(imgs.Images[0].ImageId)

	// The builder's temporary key pair and group carry only the Name tag.
	r.keyName = "packer_wsgi_" + id
	_, err = c.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String(r.keyName), TagSpecifications: tagSpec(ec2types.ResourceTypeKeyPair, nameT)})
	must(err)
	for _, g := range []struct {
		name string
		tag  ec2types.Tag
	}{{"packer_wsgi_" + id, nameT}, {"wsgi-acc-" + id, runT}} {
		sg, err := c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(g.name), Description: aws.String("test"), TagSpecifications: tagSpec(ec2types.ResourceTypeSecurityGroup, g.tag)})
		must(err)
		r.groups = append(r.groups, aws.ToString(sg.GroupId))
	}

	// The build instance (run_tags plus the builder's Name) and the boot check's instance.
	for _, tags := range [][]ec2types.Tag{{runT, nameT}, {runT}} {
		out, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(src), MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
			InstanceType: ec2types.InstanceTypeT3Small, TagSpecifications: tagSpec(ec2types.ResourceTypeInstance, tags...)})
		must(err)
		r.instances = append(r.instances, aws.ToString(out.Instances[0].InstanceId))
	}

	img, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(r.instances[0]), Name: aws.String(amiName(id))})
	must(err)
	_, err = c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{aws.ToString(img.ImageId)}, Tags: []ec2types.Tag{runT}})
	must(err)
	desc, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{aws.ToString(img.ImageId)}})
	must(err)
	for _, b := range desc.Images[0].BlockDeviceMappings {
		if b.Ebs != nil && b.Ebs.SnapshotId != nil {
			r.snapshots = append(r.snapshots, aws.ToString(b.Ebs.SnapshotId))
		}
	}
	if len(r.snapshots) == 0 {
		t.Fatalf("run %s: the AMI has no snapshot", id)
	}

	_, err = c.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String(templateName(id)),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: img.ImageId}})
	must(err)
	return r
}
