package awsproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/awscfg"
)

// upstream stands in for moto: it answers every EC2 DescribeRegions with
// one region and records what reached it.
func upstream(t *testing.T) (*httptest.Server, *[]string) {
	t.Helper()
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		seen = append(seen, string(body))
		w.Header().Set("Content-Type", "text/xml")
		_, _ = io.WriteString(w, `<DescribeRegionsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>x</requestId><regionInfo><item><regionName>us-east-1</regionName><regionEndpoint>ec2.us-east-1.amazonaws.com</regionEndpoint></item></regionInfo></DescribeRegionsResponse>`)
	}))
	t.Cleanup(srv.Close)
	return srv, &seen
}

func clients(t *testing.T, url string) (*ec2.Client, *autoscaling.Client) {
	t.Helper()
	a := awscfg.AccessConfig{Region: "us-east-1", AccessKey: "k", SecretKey: "s", MaxRetries: 1,
		CustomEndpointEC2: url, CustomEndpointAutoScaling: url}
	if errs := a.Prepare(); len(errs) > 0 {
		t.Fatal(errs)
	}
	cfg, err := a.Config(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	return a.NewEC2(cfg), a.NewAutoScaling(cfg)
}

func TestForwardInterceptAndRecord(t *testing.T) {
	up, seen := upstream(t)
	p, err := Start(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ec2c, _ := clients(t, p.URL)
	ctx := context.Background()

	out, err := ec2c.DescribeRegions(ctx, &ec2.DescribeRegionsInput{})
	if err != nil || len(out.Regions) != 1 || aws.ToString(out.Regions[0].RegionName) != "us-east-1" {
		t.Fatalf("forwarded call: %v %+v", err, out)
	}
	if len(*seen) != 1 || !strings.Contains((*seen)[0], "Action=DescribeRegions") {
		t.Fatalf("upstream saw %q", *seen)
	}

	// A fault for the next DescribeRegions only, in EC2's error format.
	faults := 1
	p.Intercept(func(w http.ResponseWriter, c *Call) bool {
		if c.Action == "DescribeRegions" && faults > 0 {
			faults--
			WriteError(w, c, http.StatusForbidden, "UnauthorizedOperation", "not allowed <here>")
			return true
		}
		return false
	})
	_, err = ec2c.DescribeRegions(ctx, &ec2.DescribeRegionsInput{})
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "UnauthorizedOperation" || apiErr.ErrorMessage() != "not allowed <here>" {
		t.Fatalf("injected error as the SDK sees it: %v", err)
	}
	if len(*seen) != 1 {
		t.Error("an intercepted call reached the upstream")
	}
	if _, err := ec2c.DescribeRegions(ctx, &ec2.DescribeRegionsInput{}); err != nil {
		t.Fatalf("after the fault: %v", err)
	}
	calls := p.Calls()
	if got := p.Actions(); !slices.Equal(got, []string{"ec2:DescribeRegions", "ec2:DescribeRegions", "ec2:DescribeRegions"}) {
		t.Errorf("actions = %v", got)
	}
	if calls[0].Answered || !calls[1].Answered || calls[1].Region != "us-east-1" {
		t.Errorf("calls = %+v", calls)
	}
}

func TestInstanceRefreshesThroughTheSDK(t *testing.T) {
	up, seen := upstream(t)
	p, err := Start(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	r := &InstanceRefreshes{Statuses: []string{RefreshPending, RefreshInProgress, RefreshFailed}, StatusReason: "health checks failed"}
	r.Register(p)
	_, as := clients(t, p.URL)
	ctx := context.Background()

	start, err := as.StartInstanceRefresh(ctx, &autoscaling.StartInstanceRefreshInput{
		AutoScalingGroupName: aws.String("web"),
		DesiredConfiguration: &astypes.DesiredConfiguration{LaunchTemplate: &astypes.LaunchTemplateSpecification{
			LaunchTemplateId: aws.String("lt-1"), Version: aws.String("7")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(start.InstanceRefreshId)
	got := r.Started()
	if len(got) != 1 || got[0].ID != id || got[0].Params.Get("DesiredConfiguration.LaunchTemplate.Version") != "7" {
		t.Fatalf("started = %+v", got)
	}
	// A second start while the first runs is refused, as Auto Scaling does.
	_, err = as.StartInstanceRefresh(ctx, &autoscaling.StartInstanceRefreshInput{AutoScalingGroupName: aws.String("web")})
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "InstanceRefreshInProgress" {
		t.Fatalf("second start: %v", err)
	}
	var statuses []astypes.InstanceRefreshStatus
	for i := 0; i < 4; i++ {
		out, err := as.DescribeInstanceRefreshes(ctx, &autoscaling.DescribeInstanceRefreshesInput{
			AutoScalingGroupName: aws.String("web"), InstanceRefreshIds: []string{id}})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.InstanceRefreshes) != 1 || aws.ToString(out.InstanceRefreshes[0].InstanceRefreshId) != id {
			t.Fatalf("describe = %+v", out.InstanceRefreshes)
		}
		ir := out.InstanceRefreshes[0]
		statuses = append(statuses, ir.Status)
		if ir.Status == astypes.InstanceRefreshStatusFailed && aws.ToString(ir.StatusReason) != "health checks failed" {
			t.Errorf("reason = %q", aws.ToString(ir.StatusReason))
		}
	}
	if want := []astypes.InstanceRefreshStatus{"Pending", "InProgress", "Failed", "Failed"}; !slices.Equal(statuses, want) {
		t.Errorf("statuses = %v, want %v", statuses, want)
	}
	if len(*seen) != 0 {
		t.Errorf("answered actions reached the upstream: %q", *seen)
	}
}

func TestFailNth(t *testing.T) {
	up, seen := upstream(t)
	p, err := Start(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Intercept(FailNth("ec2", "DescribeRegions", 2, 2, http.StatusServiceUnavailable, "RequestLimitExceeded"))
	ec2c, _ := clients(t, p.URL)
	var codes []string
	for i := 0; i < 4; i++ {
		_, err := ec2c.DescribeRegions(context.Background(), &ec2.DescribeRegionsInput{})
		var apiErr smithy.APIError
		switch {
		case err == nil:
			codes = append(codes, "ok")
		case errors.As(err, &apiErr):
			codes = append(codes, apiErr.ErrorCode())
		default:
			t.Fatal(err)
		}
	}
	if want := []string{"ok", "RequestLimitExceeded", "RequestLimitExceeded", "ok"}; !slices.Equal(codes, want) {
		t.Errorf("answers = %v, want %v", codes, want)
	}
	if len(*seen) != 2 {
		t.Errorf("upstream saw %d calls, want 2", len(*seen))
	}
}

// TestObserveAfterTheAnswer: an observer runs once the emulator has answered, so a test can act
// right after an action, and sees answered and forwarded calls alike.
func TestObserveAfterTheAnswer(t *testing.T) {
	upstreamDone := make(chan struct{}, 4)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "<ok/>")
		upstreamDone <- struct{}{}
	}))
	defer upstream.Close()
	p, err := Start(upstream.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var seen []string
	p.Handle("ec2", "EnableImageDeprecation", func(w http.ResponseWriter, c *Call) { fmt.Fprint(w, "<answered/>") })
	p.Observe(func(c *Call) {
		select {
		case <-upstreamDone:
			seen = append(seen, c.Action+" after the emulator")
		default:
			seen = append(seen, fmt.Sprintf("%s answered=%v", c.Action, c.Answered))
		}
	})
	for _, action := range []string{"DescribeImages", "EnableImageDeprecation"} {
		req, _ := http.NewRequest(http.MethodPost, p.URL, strings.NewReader("Action="+action+"&Version=2016-11-15"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=x")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	want := []string{"DescribeImages after the emulator", "EnableImageDeprecation answered=true"}
	if strings.Join(seen, "|") != strings.Join(want, "|") {
		t.Errorf("observed %q, want %q", seen, want)
	}
}

// TestSessionsThroughTheSDK: StartSession, DescribeSessions by target,
// TerminateSession, and a start whose answer is lost after the session was
// made, as the SDK sees them.
func TestSessionsThroughTheSDK(t *testing.T) {
	up, seen := upstream(t)
	p, err := Start(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	s := &Sessions{}
	s.Register(p)
	a := awscfg.AccessConfig{Region: "eu-west-1", AccessKey: "k", SecretKey: "s", MaxRetries: 1, CustomEndpointSSM: p.URL}
	if errs := a.Prepare(); len(errs) > 0 {
		t.Fatal(errs)
	}
	ctx := context.Background()
	c, err := a.SSM(ctx, "eu-west-1")
	if err != nil {
		t.Fatal(err)
	}
	start := func(target string) (*ssm.StartSessionOutput, error) {
		return c.StartSession(ctx, &ssm.StartSessionInput{Target: aws.String(target), DocumentName: aws.String("AWS-StartPortForwardingSession"),
			Parameters: map[string][]string{"portNumber": {"22"}}})
	}
	first, err := start("i-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := start("i-2"); err != nil {
		t.Fatal(err)
	}
	s.LoseAnswers(1)
	var ae smithy.APIError
	if _, err := start("i-1"); err == nil || errors.As(err, &ae) {
		t.Fatalf("a lost answer: want a transport error, got %v", err)
	}
	if got := s.Open(); len(got) != 3 {
		t.Fatalf("open after the lost answer: %v, want 3 (the session is made all the same)", got)
	}
	list := func(target string) []string {
		out, err := c.DescribeSessions(ctx, &ssm.DescribeSessionsInput{State: ssmtypes.SessionStateActive,
			Filters: []ssmtypes.SessionFilter{{Key: ssmtypes.SessionFilterKeyTargetId, Value: aws.String(target)}}})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, sess := range out.Sessions {
			if aws.ToString(sess.Target) != target {
				t.Errorf("DescribeSessions for %s listed %+v", target, sess)
			}
			ids = append(ids, aws.ToString(sess.SessionId))
		}
		return ids
	}
	if got := list("i-1"); len(got) != 2 || got[0] != aws.ToString(first.SessionId) {
		t.Fatalf("sessions to i-1: %v", got)
	}
	if _, err := c.TerminateSession(ctx, &ssm.TerminateSessionInput{SessionId: first.SessionId}); err != nil {
		t.Fatal(err)
	}
	if got := list("i-1"); len(got) != 1 || got[0] == aws.ToString(first.SessionId) {
		t.Fatalf("sessions to i-1 after terminating %s: %v", aws.ToString(first.SessionId), got)
	}
	if _, err := c.DescribeSessions(ctx, &ssm.DescribeSessionsInput{State: ssmtypes.SessionStateHistory}); !errors.As(err, &ae) || ae.ErrorCode() != "ValidationException" {
		t.Errorf("State History: %v", err)
	}
	if len(*seen) != 0 {
		t.Errorf("answered actions reached the upstream: %q", *seen)
	}
}

// TestImageTagSpecs: CreateImage and CopyImage with snapshot tags reach the
// upstream without what moto cannot take, and the tags land by CreateTags.
func TestImageTagSpecs(t *testing.T) {
	var got []url.Values
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(body))
		got = append(got, form)
		w.Header().Set("Content-Type", "text/xml")
		switch form.Get("Action") {
		case "CreateImage", "CopyImage":
			fmt.Fprintf(w, `<%[1]sResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>x</requestId><imageId>ami-0123456789abcdef0</imageId></%[1]sResponse>`, form.Get("Action"))
		case "DescribeImages":
			fmt.Fprint(w, `<DescribeImagesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>x</requestId><imagesSet><item><imageId>ami-0123456789abcdef0</imageId><blockDeviceMapping><item><deviceName>/dev/xvda</deviceName><ebs><snapshotId>snap-0123456789abcdef0</snapshotId></ebs></item></blockDeviceMapping></item></imagesSet></DescribeImagesResponse>`)
		case "CreateTags":
			fmt.Fprint(w, `<CreateTagsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>x</requestId><return>true</return></CreateTagsResponse>`)
		default:
			w.WriteHeader(http.StatusBadRequest)
		}
	}))
	defer up.Close()
	p, err := Start(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, _ := clients(t, p.URL)
	ctx := context.Background()
	img := []ec2types.Tag{{Key: aws.String("App"), Value: aws.String("demo")}}
	snap := []ec2types.Tag{{Key: aws.String("Backup"), Value: aws.String("none")}}
	specs := []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeImage, Tags: img}, {ResourceType: ec2types.ResourceTypeSnapshot, Tags: snap}}

	out, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String("i-1"), Name: aws.String("n"), TagSpecifications: specs})
	if err != nil || aws.ToString(out.ImageId) != "ami-0123456789abcdef0" {
		t.Fatalf("CreateImage: %v %+v", err, out)
	}
	if len(got) != 3 {
		t.Fatalf("upstream calls: %v", got)
	}
	if f := got[0]; f.Get("TagSpecification.1.ResourceType") != "image" || f.Get("TagSpecification.1.Tag.1.Key") != "App" || f.Has("TagSpecification.2.ResourceType") {
		t.Errorf("CreateImage forwarded as %v, want only the image specification", f)
	}
	if f := got[2]; f.Get("Action") != "CreateTags" || f.Get("ResourceId.1") != "snap-0123456789abcdef0" || f.Has("ResourceId.2") || f.Get("Tag.1.Key") != "Backup" {
		t.Errorf("snapshot tags: %v", f)
	}

	got = nil
	if _, err := c.CopyImage(ctx, &ec2.CopyImageInput{SourceImageId: aws.String("ami-1"), SourceRegion: aws.String("us-east-1"), Name: aws.String("n"), TagSpecifications: specs}); err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, f := range got {
		actions = append(actions, f.Get("Action"))
	}
	if want := []string{"CopyImage", "CreateTags", "DescribeImages", "CreateTags"}; !slices.Equal(actions, want) {
		t.Fatalf("upstream calls %v, want %v", actions, want)
	}
	if f := got[0]; f.Has("TagSpecification.1.ResourceType") {
		t.Errorf("CopyImage forwarded with tag specifications: %v", f)
	}
	if f := got[1]; f.Get("ResourceId.1") != "ami-0123456789abcdef0" || f.Get("Tag.1.Key") != "App" {
		t.Errorf("image tags: %v", f)
	}

	// Without tag specifications the call goes on unchanged.
	got = nil
	if _, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String("i-1"), Name: aws.String("n")}); err != nil || len(got) != 1 {
		t.Fatalf("plain CreateImage: %v, upstream %v", err, got)
	}
	if calls := p.Calls(); len(calls) != 3 {
		t.Errorf("the proxy recorded %d calls, want the 3 the client made", len(calls))
	}
}
