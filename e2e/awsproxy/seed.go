package awsproxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// What a test puts into moto before a machine reads it with its role: S3 objects, SSM
// parameters and Secrets Manager secrets. Signed as the SDKs sign, with moto's test key.

// Call sends one request to moto, signed for service in region, and returns the body of a 2xx
// answer.
func (m *Moto) Call(ctx context.Context, region, service, method, path string, header http.Header, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, m.URL+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	sum := sha256.Sum256(body)
	hash := hex.EncodeToString(sum[:])
	if service == "s3" {
		req.Header.Set("X-Amz-Content-Sha256", hash)
	}
	creds := aws.Credentials{AccessKeyID: "testing", SecretAccessKey: "testing"}
	signer := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = service == "s3" })
	if err := signer.SignHTTP(ctx, creds, req, hash, service, region, time.Now()); err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return out, &CallError{Status: resp.StatusCode, Body: out, call: service + " " + method + " " + path}
	}
	return out, nil
}

// CallError is moto's answer to a Call that was not 2xx.
type CallError struct {
	Status int
	Body   []byte
	call   string
}

func (e *CallError) Error() string {
	return fmt.Sprintf("%s: %d %s: %s", e.call, e.Status, http.StatusText(e.Status), e.Body)
}

// PutObject makes the bucket in region (if need be) and puts data at key.
func (m *Moto) PutObject(ctx context.Context, region, bucket, key string, data []byte) error {
	// us-east-1 is S3's default region and takes no location constraint, as on AWS.
	var cfg []byte
	if region != "us-east-1" {
		cfg = []byte(`<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LocationConstraint>` +
			region + `</LocationConstraint></CreateBucketConfiguration>`)
	}
	if _, err := m.Call(ctx, region, "s3", http.MethodPut, "/"+bucket, nil, cfg); err != nil {
		return err
	}
	_, err := m.Call(ctx, region, "s3", http.MethodPut, "/"+bucket+"/"+(&url.URL{Path: key}).EscapedPath(), nil, data)
	return err
}

func (m *Moto) jsonCall(ctx context.Context, region, service, target string, in any) ([]byte, error) {
	body, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	return m.Call(ctx, region, service, http.MethodPost, "/", http.Header{
		"Content-Type": {"application/x-amz-json-1.1"}, "X-Amz-Target": {target}}, body)
}

// CreateSecret makes a Secrets Manager secret with a string value and returns its ARN.
func (m *Moto) CreateSecret(ctx context.Context, region, name, value string) (string, error) {
	out, err := m.jsonCall(ctx, region, "secretsmanager", "secretsmanager.CreateSecret", map[string]string{"Name": name, "SecretString": value})
	if err != nil {
		return "", err
	}
	var doc struct{ ARN string }
	if err := json.Unmarshal(out, &doc); err != nil || doc.ARN == "" {
		return "", fmt.Errorf("CreateSecret %s: no ARN in %s (%v)", name, out, err)
	}
	return doc.ARN, nil
}

// PutSecureString puts an SSM SecureString parameter.
func (m *Moto) PutSecureString(ctx context.Context, region, name, value string) error {
	_, err := m.jsonCall(ctx, region, "ssm", "AmazonSSM.PutParameter", map[string]any{"Name": name, "Value": value, "Type": "SecureString"})
	return err
}
