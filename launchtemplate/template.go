package launchtemplate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// templateAPI is the part of EC2 that adds a launch-template version.
type templateAPI interface {
	DescribeLaunchTemplates(context.Context, *ec2.DescribeLaunchTemplatesInput, ...func(*ec2.Options)) (*ec2.DescribeLaunchTemplatesOutput, error)
	DescribeLaunchTemplateVersions(context.Context, *ec2.DescribeLaunchTemplateVersionsInput, ...func(*ec2.Options)) (*ec2.DescribeLaunchTemplateVersionsOutput, error)
	CreateLaunchTemplate(context.Context, *ec2.CreateLaunchTemplateInput, ...func(*ec2.Options)) (*ec2.CreateLaunchTemplateOutput, error)
	CreateLaunchTemplateVersion(context.Context, *ec2.CreateLaunchTemplateVersionInput, ...func(*ec2.Options)) (*ec2.CreateLaunchTemplateVersionOutput, error)
	ModifyLaunchTemplate(context.Context, *ec2.ModifyLaunchTemplateInput, ...func(*ec2.Options)) (*ec2.ModifyLaunchTemplateOutput, error)
	CreateTags(context.Context, *ec2.CreateTagsInput, ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
}

// undoAPI is what Destroy and a failed run need to remove a version.
type undoAPI interface {
	ModifyLaunchTemplate(context.Context, *ec2.ModifyLaunchTemplateInput, ...func(*ec2.Options)) (*ec2.ModifyLaunchTemplateOutput, error)
	DeleteLaunchTemplate(context.Context, *ec2.DeleteLaunchTemplateInput, ...func(*ec2.Options)) (*ec2.DeleteLaunchTemplateOutput, error)
	DeleteLaunchTemplateVersions(context.Context, *ec2.DeleteLaunchTemplateVersionsInput, ...func(*ec2.Options)) (*ec2.DeleteLaunchTemplateVersionsOutput, error)
}

// versionRequest is what one region's new version must carry.
type versionRequest struct {
	Region      string
	AMI         string
	TemplateID  string
	Name        string
	Create      bool
	Source      string // version number, $Default or $Latest
	SetDefault  bool
	Description string
	UserData    string // base64, empty to inherit
	Tags        map[string]string
	TokenSource string
}

// clientToken derives the idempotency token for one region and template:
// the same source gives the same token, so EC2 answers a retried create
// with the version it already made. EC2 allows 128 ASCII characters.
func (r versionRequest) clientToken() string {
	src := r.TokenSource
	if src == "" {
		ud := sha256.Sum256([]byte(r.UserData))
		src = strings.Join([]string{r.AMI, hex.EncodeToString(ud[:]), r.Source, r.Description}, "\x00")
	}
	sum := sha256.Sum256([]byte(strings.Join([]string{src, r.Region, r.TemplateID, r.Name}, "\x00")))
	return "wsgi-lt-" + hex.EncodeToString(sum[:])
}

// ensureVersion adds (or, on a retry, finds) the version with the AMI and
// user data, and makes it the default when asked. On error it returns what
// it already made, so the caller can undo it.
func ensureVersion(ctx context.Context, ui packersdk.Ui, api templateAPI, req versionRequest) (TemplateVersion, error) {
	tv := TemplateVersion{Region: req.Region, AMI: req.AMI}
	lt, err := findTemplate(ctx, api, req)
	if err != nil {
		return tv, err
	}
	if lt == nil {
		if !req.Create {
			return tv, fmt.Errorf("%s: launch template %s not found; create it first or set create_if_missing = true", req.Region, req.display())
		}
		return createTemplate(ctx, ui, api, req)
	}
	tv.TemplateID = aws.ToString(lt.LaunchTemplateId)
	tv.TemplateName = aws.ToString(lt.LaunchTemplateName)
	tv.PreviousDefault = aws.ToInt64(lt.DefaultVersionNumber)

	source := req.Source
	switch source {
	case "$Default":
		source = strconv.FormatInt(aws.ToInt64(lt.DefaultVersionNumber), 10)
	case "$Latest":
		source = strconv.FormatInt(aws.ToInt64(lt.LatestVersionNumber), 10)
	}

	// A retry of the same build finds its version as the latest one. EC2
	// would also answer a repeated client token with it, but checking
	// first keeps the retry visible in the log and works on endpoints that
	// ignore tokens.
	if v, err := sameLatest(ctx, api, tv.TemplateID, req); err != nil {
		return tv, err
	} else if v != 0 {
		ui.Say(fmt.Sprintf("%s: %s version %d already carries %s and this user data; not adding another", req.Region, tv.TemplateID, v, req.AMI))
		tv.Version = v
	} else {
		data := &types.RequestLaunchTemplateData{ImageId: aws.String(req.AMI)}
		if req.UserData != "" {
			data.UserData = aws.String(req.UserData)
		}
		out, err := api.CreateLaunchTemplateVersion(ctx, &ec2.CreateLaunchTemplateVersionInput{
			LaunchTemplateId:   aws.String(tv.TemplateID),
			SourceVersion:      aws.String(source),
			LaunchTemplateData: data,
			VersionDescription: optional(req.Description),
			ClientToken:        aws.String(req.clientToken()),
		})
		if err != nil {
			return tv, fmt.Errorf("%s: creating a version of %s from version %s: %w", req.Region, tv.TemplateID, source, err)
		}
		if out.LaunchTemplateVersion == nil || out.LaunchTemplateVersion.VersionNumber == nil {
			return tv, fmt.Errorf("%s: creating a version of %s: no version number in the answer", req.Region, tv.TemplateID)
		}
		tv.Version = *out.LaunchTemplateVersion.VersionNumber
		tv.CreatedVersion = true
		ui.Say(fmt.Sprintf("%s: %s version %d created from version %s with %s", req.Region, tv.TemplateID, tv.Version, source, req.AMI))
	}

	if len(req.Tags) > 0 {
		if _, err := api.CreateTags(ctx, &ec2.CreateTagsInput{
			Resources: []string{tv.TemplateID},
			Tags:      ec2Tags(req.Tags),
		}); err != nil {
			return tv, fmt.Errorf("%s: tagging %s: %w", req.Region, tv.TemplateID, err)
		}
	}
	if req.SetDefault && tv.PreviousDefault != tv.Version {
		if _, err := api.ModifyLaunchTemplate(ctx, &ec2.ModifyLaunchTemplateInput{
			LaunchTemplateId: aws.String(tv.TemplateID),
			DefaultVersion:   aws.String(strconv.FormatInt(tv.Version, 10)),
		}); err != nil {
			return tv, fmt.Errorf("%s: making version %d the default of %s: %w", req.Region, tv.Version, tv.TemplateID, err)
		}
		tv.DefaultChanged = true
		ui.Say(fmt.Sprintf("%s: %s default version %d -> %d", req.Region, tv.TemplateID, tv.PreviousDefault, tv.Version))
	}
	return tv, nil
}

func (r versionRequest) display() string {
	if r.TemplateID != "" {
		return r.TemplateID
	}
	return strconv.Quote(r.Name)
}

// findTemplate returns nil, nil when the template does not exist.
func findTemplate(ctx context.Context, api templateAPI, req versionRequest) (*types.LaunchTemplate, error) {
	in := &ec2.DescribeLaunchTemplatesInput{}
	if req.TemplateID != "" {
		in.LaunchTemplateIds = []string{req.TemplateID}
	} else {
		in.LaunchTemplateNames = []string{req.Name}
	}
	out, err := api.DescribeLaunchTemplates(ctx, in)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: looking up launch template %s: %w", req.Region, req.display(), err)
	}
	if len(out.LaunchTemplates) == 0 {
		return nil, nil
	}
	return &out.LaunchTemplates[0], nil
}

// sameLatest returns the latest version's number when it already launches
// the AMI with the user data (when given); 0 otherwise. The description is
// not compared: it often holds a per-run value such as the build id, and a
// version with the same AMI and user data launches the same instances.
func sameLatest(ctx context.Context, api templateAPI, id string, req versionRequest) (int64, error) {
	out, err := api.DescribeLaunchTemplateVersions(ctx, &ec2.DescribeLaunchTemplateVersionsInput{
		LaunchTemplateId: aws.String(id),
		Versions:         []string{"$Latest"},
	})
	if err != nil {
		return 0, fmt.Errorf("%s: reading the latest version of %s: %w", req.Region, id, err)
	}
	for _, v := range out.LaunchTemplateVersions {
		d := v.LaunchTemplateData
		if d == nil || aws.ToString(d.ImageId) != req.AMI {
			continue
		}
		if req.UserData != "" && aws.ToString(d.UserData) != req.UserData {
			continue
		}
		return aws.ToInt64(v.VersionNumber), nil
	}
	return 0, nil
}

func createTemplate(ctx context.Context, ui packersdk.Ui, api templateAPI, req versionRequest) (TemplateVersion, error) {
	tv := TemplateVersion{Region: req.Region, AMI: req.AMI, TemplateName: req.Name}
	data := &types.RequestLaunchTemplateData{ImageId: aws.String(req.AMI)}
	if req.UserData != "" {
		data.UserData = aws.String(req.UserData)
	}
	in := &ec2.CreateLaunchTemplateInput{
		LaunchTemplateName: aws.String(req.Name),
		LaunchTemplateData: data,
		VersionDescription: optional(req.Description),
		ClientToken:        aws.String(req.clientToken()),
	}
	if len(req.Tags) > 0 {
		in.TagSpecifications = []types.TagSpecification{{
			ResourceType: types.ResourceTypeLaunchTemplate,
			Tags:         ec2Tags(req.Tags),
		}}
	}
	out, err := api.CreateLaunchTemplate(ctx, in)
	if err != nil {
		return tv, fmt.Errorf("%s: creating launch template %q: %w", req.Region, req.Name, err)
	}
	if out.LaunchTemplate == nil || out.LaunchTemplate.LaunchTemplateId == nil {
		return tv, fmt.Errorf("%s: creating launch template %q: no id in the answer", req.Region, req.Name)
	}
	tv.TemplateID = *out.LaunchTemplate.LaunchTemplateId
	tv.Version = aws.ToInt64(out.LaunchTemplate.LatestVersionNumber)
	if tv.Version == 0 {
		tv.Version = 1
	}
	tv.CreatedTemplate = true
	tv.CreatedVersion = true
	tv.DefaultChanged = true
	ui.Say(fmt.Sprintf("%s: created launch template %s (%s), version %d with %s", req.Region, req.Name, tv.TemplateID, tv.Version, req.AMI))
	return tv, nil
}

// undoVersion removes what ensureVersion made in one region.
func undoVersion(ctx context.Context, api undoAPI, tv TemplateVersion) error {
	if tv.TemplateID == "" {
		return nil
	}
	if tv.CreatedTemplate {
		if _, err := api.DeleteLaunchTemplate(ctx, &ec2.DeleteLaunchTemplateInput{LaunchTemplateId: aws.String(tv.TemplateID)}); err != nil && !isNotFound(err) {
			return fmt.Errorf("%s: deleting launch template %s: %w", tv.Region, tv.TemplateID, err)
		}
		return nil
	}
	if tv.DefaultChanged && tv.PreviousDefault != 0 {
		if err := restoreDefault(ctx, api, tv); err != nil {
			return err
		}
	}
	if !tv.CreatedVersion || tv.Version == 0 {
		return nil
	}
	out, err := api.DeleteLaunchTemplateVersions(ctx, &ec2.DeleteLaunchTemplateVersionsInput{
		LaunchTemplateId: aws.String(tv.TemplateID),
		Versions:         []string{strconv.FormatInt(tv.Version, 10)},
	})
	if err != nil {
		return fmt.Errorf("%s: deleting version %d of %s: %w", tv.Region, tv.Version, tv.TemplateID, err)
	}
	for _, u := range out.UnsuccessfullyDeletedLaunchTemplateVersions {
		if u.ResponseError != nil {
			return fmt.Errorf("%s: deleting version %d of %s: %s: %s", tv.Region, tv.Version, tv.TemplateID,
				u.ResponseError.Code, aws.ToString(u.ResponseError.Message))
		}
	}
	return nil
}

func restoreDefault(ctx context.Context, api undoAPI, tv TemplateVersion) error {
	if _, err := api.ModifyLaunchTemplate(ctx, &ec2.ModifyLaunchTemplateInput{
		LaunchTemplateId: aws.String(tv.TemplateID),
		DefaultVersion:   aws.String(strconv.FormatInt(tv.PreviousDefault, 10)),
	}); err != nil {
		return fmt.Errorf("%s: setting the default version of %s back to %d: %w", tv.Region, tv.TemplateID, tv.PreviousDefault, err)
	}
	return nil
}

func ec2Tags(m map[string]string) []types.Tag {
	keys := slices.Sorted(maps.Keys(m))
	tags := make([]types.Tag, 0, len(keys))
	for _, k := range keys {
		tags = append(tags, types.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return tags
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return aws.String(s)
}

// isNotFound tells "no such template/image/snapshot" from other failures.
func isNotFound(err error) bool {
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	code := apiErr.ErrorCode()
	return strings.Contains(code, "NotFound") || strings.HasSuffix(code, ".NotFound")
}
