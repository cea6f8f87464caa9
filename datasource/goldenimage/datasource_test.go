package goldenimage

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/zclconf/go-cty/cty"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/awscfg"
	"github.com/wsgi-ami/packer-plugin-wsgi/internal/contract"
)

// fakeImages is the DescribeImages of one region: it applies tag: and state filters as EC2
// does and records every request.
type fakeImages struct {
	images []types.Image
	calls  []*ec2.DescribeImagesInput
}

func (f *fakeImages) DescribeImages(_ context.Context, in *ec2.DescribeImagesInput, _ ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error) {
	f.calls = append(f.calls, in)
	out := &ec2.DescribeImagesOutput{}
	for _, img := range f.images {
		ok := true
		for _, fl := range in.Filters {
			name := aws.ToString(fl.Name)
			switch {
			case name == "state":
				ok = ok && slices.Contains(fl.Values, string(img.State))
			case strings.HasPrefix(name, "tag:"):
				match := false
				for _, t := range img.Tags {
					if aws.ToString(t.Key) == strings.TrimPrefix(name, "tag:") && slices.Contains(fl.Values, aws.ToString(t.Value)) {
						match = true
					}
				}
				ok = ok && match
			}
		}
		if ok {
			out.Images = append(out.Images, img)
		}
	}
	return out, nil
}

type imageOpt func(*types.Image)

func image(id, created, family string, opts ...imageOpt) types.Image {
	img := types.Image{
		ImageId: aws.String(id), Name: aws.String("shop-" + id), CreationDate: aws.String(created), State: types.ImageStateAvailable,
		Tags: []types.Tag{{Key: aws.String(awscfg.TagAMIFamily), Value: aws.String(family)}},
	}
	for _, o := range opts {
		o(&img)
	}
	return img
}

func stackTags(schema, digest, provides string) imageOpt {
	return func(img *types.Image) {
		img.Tags = append(img.Tags,
			types.Tag{Key: aws.String(contract.TagSchema), Value: aws.String(schema)},
			types.Tag{Key: aws.String(contract.TagDigest), Value: aws.String(digest)},
			types.Tag{Key: aws.String(contract.TagProvides), Value: aws.String(provides)})
	}
}

func deprecatedAt(t string) imageOpt {
	return func(img *types.Image) { img.DeprecationTime = aws.String(t) }
}

func state(s types.ImageState) imageOpt { return func(img *types.Image) { img.State = s } }

var now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func newDatasource(t *testing.T, raw map[string]interface{}, regions map[string]*fakeImages) (*Datasource, error) {
	t.Helper()
	base := map[string]interface{}{"region": "eu-west-1", "skip_credential_validation": true}
	for k, v := range raw {
		base[k] = v
	}
	d := &Datasource{now: func() time.Time { return now }}
	d.newEC2 = func(_ context.Context, region string) (describeImagesAPI, string, error) {
		f, ok := regions[region]
		if !ok {
			t.Fatalf("no fake for region %q", region)
		}
		return f, region, nil
	}
	return d, d.Configure(base)
}

func TestNewestOfTheFamilyInEachRegion(t *testing.T) {
	eu := &fakeImages{images: []types.Image{
		image("ami-eu1", "2026-05-01T10:00:00.000Z", "shop", stackTags("1", "sha256:aa", "aws-requests schema-1")),
		image("ami-eu2", "2026-05-08T10:00:00.000Z", "shop", stackTags("1", "sha256:bb", "aws-requests git schema-1")),
		// Newer, but not to be picked: deprecated, still pending, another family.
		image("ami-eu3", "2026-05-09T10:00:00.000Z", "shop", deprecatedAt("2026-05-31T00:00:00.000Z")),
		image("ami-eu4", "2026-05-10T10:00:00.000Z", "shop", state(types.ImageStatePending)),
		image("ami-eu5", "2026-05-11T10:00:00.000Z", "blog"),
		// Deprecation in the future: still a candidate, but older.
		image("ami-eu0", "2026-04-01T10:00:00.000Z", "shop", deprecatedAt("2027-01-01T00:00:00.000Z")),
	}}
	us := &fakeImages{images: []types.Image{
		image("ami-us1", "2026-05-08T10:05:00.000Z", "shop", stackTags("1", "sha256:bb", "aws-requests git schema-1")),
	}}
	d, err := newDatasource(t, map[string]interface{}{"family": "shop", "regions": []string{"eu-west-1", "us-east-1"}},
		map[string]*fakeImages{"eu-west-1": eu, "us-east-1": us})
	if err != nil {
		t.Fatal(err)
	}
	v, err := d.Execute()
	if err != nil {
		t.Fatal(err)
	}
	str := func(path ...string) string {
		x := v
		for _, p := range path {
			if x.Type().IsObjectType() {
				x = x.GetAttr(p)
			} else {
				x = x.Index(cty.StringVal(p))
			}
		}
		return x.AsString()
	}
	for _, c := range []struct{ got, want string }{
		{str("ami_ids", "eu-west-1"), "ami-eu2"},
		{str("ami_ids", "us-east-1"), "ami-us1"},
		{str("names", "eu-west-1"), "shop-ami-eu2"},
		{str("creation_dates", "us-east-1"), "2026-05-08T10:05:00.000Z"},
		{str("stack_schemas", "eu-west-1"), "1"},
		{str("stack_digests", "us-east-1"), "sha256:bb"},
		{str("stack_provides", "eu-west-1"), "aws-requests git schema-1"},
		{str("region"), "eu-west-1"},
		{str("id"), "ami-eu2"},
		{str("name"), "shop-ami-eu2"},
		{str("creation_date"), "2026-05-08T10:00:00.000Z"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	in := eu.calls[0]
	if !reflect.DeepEqual(in.Owners, []string{"self"}) || aws.ToBool(in.IncludeDeprecated) {
		t.Errorf("owners %v, include deprecated %v: want self and false", in.Owners, aws.ToBool(in.IncludeDeprecated))
	}
	var filters []string
	for _, f := range in.Filters {
		filters = append(filters, aws.ToString(f.Name)+"="+strings.Join(f.Values, ","))
	}
	if want := []string{"tag:wsgi:ami-family=shop", "state=available"}; !reflect.DeepEqual(filters, want) {
		t.Errorf("filters %v, want %v", filters, want)
	}
}

func TestEveryRegionWithoutAnImageIsNamed(t *testing.T) {
	eu := &fakeImages{images: []types.Image{image("ami-eu3", "2026-05-09T10:00:00.000Z", "shop", deprecatedAt("2026-05-31T00:00:00.000Z"))}}
	us := &fakeImages{}
	d, err := newDatasource(t, map[string]interface{}{"family": "shop", "regions": []string{"eu-west-1", "us-east-1"}, "owners": []string{"123456789012"}},
		map[string]*fakeImages{"eu-west-1": eu, "us-east-1": us})
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.Execute()
	for _, want := range []string{
		`wsgi-golden-image: eu-west-1: no available, non-deprecated AMI tagged wsgi:ami-family=shop owned by 123456789012 (1 deprecated ones are left out); bake one first (the wsgi-ami builder with ami_family = "shop"`,
		`wsgi-golden-image: us-east-1: no available, non-deprecated AMI tagged wsgi:ami-family=shop owned by 123456789012; bake one first`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error:\n%v\nwant it to contain:\n%s", err, want)
		}
	}
}

func TestDefaultRegionAndExtraFilters(t *testing.T) {
	eu := &fakeImages{images: []types.Image{
		image("ami-eu1", "2026-05-01T10:00:00.000Z", "shop", func(img *types.Image) {
			img.Tags = append(img.Tags, types.Tag{Key: aws.String("App"), Value: aws.String("shop")})
		}),
		image("ami-eu2", "2026-05-02T10:00:00.000Z", "shop"), // newer, without the App tag
	}}
	d, err := newDatasource(t, map[string]interface{}{"family": "shop", "filters": map[string]string{"tag:App": "shop", "architecture": "arm64"}},
		map[string]*fakeImages{"eu-west-1": eu})
	if err != nil {
		t.Fatal(err)
	}
	out, err := d.find(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// An image without stack tags is found; its stack outputs are empty, and the
	// post-processor's fit check refuses it by name.
	if !reflect.DeepEqual(out.AMIIDs, map[string]string{"eu-west-1": "ami-eu1"}) || out.StackProvides["eu-west-1"] != "" {
		t.Errorf("outputs = %+v", out)
	}
	var names []string
	for _, f := range eu.calls[0].Filters {
		names = append(names, aws.ToString(f.Name))
	}
	if want := []string{"tag:wsgi:ami-family", "state", "architecture", "tag:App"}; !reflect.DeepEqual(names, want) {
		t.Errorf("filters %v, want %v", names, want)
	}
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		name string
		raw  map[string]interface{}
		want string
	}{
		{"no family", map[string]interface{}{}, "family: required: the wsgi:ami-family tag value of the images"},
		{"bad region", map[string]interface{}{"family": "shop", "regions": []string{"ireland"}}, `regions: "ireland" is not a region name like eu-west-1`},
		{"region twice", map[string]interface{}{"family": "shop", "regions": []string{"eu-west-1", "eu-west-1"}}, `regions: "eu-west-1" is listed twice`},
		{"bad owner", map[string]interface{}{"family": "shop", "owners": []string{"12345"}}, `owners: "12345" is not an account id (12 digits), self or an owner alias`},
		{"state filter", map[string]interface{}{"family": "shop", "filters": map[string]string{"state": "pending"}}, "filters: state is always available; remove it"},
		{"family filter", map[string]interface{}{"family": "shop", "filters": map[string]string{"tag:wsgi:ami-family": "x"}}, "filters: tag:wsgi:ami-family is set by family; remove it"},
		{"access block", map[string]interface{}{"family": "shop", "custom_endpoint_ec2": "ec2.local"}, `custom_endpoint_ec2: must be a URL like https://ec2.example.com, got "ec2.local"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newDatasource(t, tc.raw, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error:\n%v\nwant it to contain:\n%s", err, tc.want)
			}
		})
	}
}
