#!/usr/bin/python3 -IS
# wsgi-aws: the instance's own signed AWS requests, made with the instance role.
#
# The baked deploy (/usr/local/sbin/wsgi-deploy) runs this as root at first boot to fetch the
# release archive from S3, to read the app's secrets from SSM Parameter Store and Secrets Manager,
# and to complete an Auto Scaling launch lifecycle action. It is installed by wsgi-stack at
# /usr/local/lib/wsgi/wsgi-aws (contract.AWSHelper).
#
# Why a Python helper, and not the AWS CLI or curl --aws-sigv4:
#   - python3 is on every image the stack bakes (it runs Gunicorn); the AWS CLI is not (Ubuntu's
#     and Debian's stock images differ, and the stack does not install it).
#   - One process start per deploy step instead of the AWS CLI's start-up (a second or more of
#     Python imports) for every secret.
#   - It decodes the JSON answers with a real JSON parser: a shell cannot take a secret's JSON
#     string apart safely (escapes, quotes, newlines, unicode), so the value would be damaged or,
#     worse, interpreted.
#   - It is tested against a signature check by aws-sdk-go-v2's signer and against moto.
#
# Standard library only (urllib, hmac, hashlib, json, xml), Python 3.9 or later (Amazon Linux 2023
# ships 3.9, Debian 12 3.11, Debian 13 3.13). One file, no third-party import. `-IS` in the first
# line keeps PYTHONPATH, PYTHONHOME, site-packages and their .pth files out of a program that runs
# as root (and saves their start-up time).
#
# Secret values are never printed, never logged, never passed to another process: they go from
# the HTTPS answer into the environment file and nowhere else. Error lines name the reference
# (NAME and ssm:/path), the AWS error code and message, never a value.

import argparse
import datetime
import email.utils
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import socket
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

PROG = "wsgi-aws"
USER_AGENT = "wsgi-aws (packer-plugin-wsgi)"  # shows in CloudTrail as the caller's user agent
EXIT_FAILED = 1
EXIT_USAGE = 2

DEFAULT_IMDS = "http://169.254.169.254"
DEFAULT_RETRIES = 5
DEFAULT_TIMEOUT = 10.0
DEFAULT_BACKOFF = 0.5
BACKOFF_CAP = 20.0
IMDS_TOKEN_TTL = "21600"

# Error codes after which the same request may succeed when sent again.
THROTTLING = frozenset([
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException", "RequestLimitExceeded", "SlowDown", "TooManyRequestsException",
    "ProvisionedThroughputExceededException", "BandwidthLimitExceeded", "PriorRequestNotComplete",
    "EC2ThrottledException",
])
TRANSIENT = frozenset([
    "RequestTimeout", "RequestTimeoutException", "InternalError", "InternalFailure",
    "ServiceUnavailable",
])
# Error codes that mean the role credentials expired: read them again from IMDS, then retry.
EXPIRED_TOKEN = frozenset(["ExpiredToken", "ExpiredTokenException"])
# Error codes that can mean the clock is off: retry with the offset from the server's Date.
CLOCK_SKEW = frozenset([
    "RequestTimeTooSkewed", "RequestExpired", "RequestInTheFuture", "InvalidSignatureException",
    "SignatureDoesNotMatch", "AuthFailure",
])

# service: (suffix of its AWS_ENDPOINT_URL_* variable, signing name, host label)
SERVICES = {
    "s3": ("S3", "s3", "s3"),
    "ssm": ("SSM", "ssm", "ssm"),
    "secretsmanager": ("SECRETS_MANAGER", "secretsmanager", "secretsmanager"),
    "autoscaling": ("AUTO_SCALING", "autoscaling", "autoscaling"),
}

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
S3_VIRTUAL_HOST_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]\Z")


class Failure(Exception):
    """A failure worth one line on stderr: what failed and why."""


class Usage(Failure):
    """Wrong arguments: exit status 2, before any request."""


class AWSError(Failure):
    """An error answer from an AWS API."""

    def __init__(self, status, code, message, headers):
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.detail = "%s (HTTP %d)" % (code, status)
        if message:
            self.detail += ": " + message
        Failure.__init__(self, self.detail)

    def about(self, what):
        """The same error, its line naming the request."""
        self.args = ("%s: %s" % (what, self.detail),)
        return self


class Transient(Failure):
    """A connection error, a timeout or a cut answer: worth another attempt."""


def one_line(text, limit=300):
    """text without control characters, on one line, at most limit characters."""
    text = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return text


def backoff_delay(base, retry):
    """Full jitter: a random wait in [0, min(cap, base * 2**(retry-1))]."""
    return random.uniform(0, min(BACKOFF_CAP, base * (2 ** (retry - 1))))


def notice(text):
    # Progress goes to stdout, so that a failure leaves exactly one line on stderr.
    print("%s: %s" % (PROG, one_line(text, 500)), flush=True)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: it would carry the signed headers to another host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def opener(use_proxy):
    handlers = [NoRedirect()]
    if not use_proxy:
        handlers.append(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)


def transient_reason(err):
    """A short reason for a connection-level error."""
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        err = err.reason
    if isinstance(err, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return one_line(err) or type(err).__name__


def is_cert_error(err):
    return isinstance(err, urllib.error.URLError) and isinstance(err.reason, ssl.SSLCertVerificationError)


# ---------------------------------------------------------------- instance metadata (IMDSv2)

class IMDS:
    """The instance metadata service, always with a session token (IMDSv2), never via a proxy."""

    def __init__(self, base, timeout, retries, backoff):
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.token = None
        self.open = opener(use_proxy=False).open

    def fail(self, what):
        return Failure("instance metadata (IMDSv2) at %s: %s" % (self.base, what))

    def _once(self, method, path, headers):
        req = urllib.request.Request(self.base + path, method=method, headers=headers,
                                     data=b"" if method == "PUT" else None)
        with self.open(req, timeout=self.timeout) as resp:
            return resp.read().decode("utf-8", "replace")

    def _call(self, method, path, headers):
        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(backoff_delay(self.backoff, attempt))
            try:
                return self._once(method, path, headers)
            except urllib.error.HTTPError as e:
                if e.code < 500 and e.code != 429:
                    raise
                last = "%s %s: HTTP %d" % (method, path, e.code)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
                last = "%s %s: %s" % (method, path, transient_reason(e))
        raise self.fail("%s (gave up after %d attempts)" % (last, self.retries + 1))

    def get_token(self):
        try:
            self.token = self._call("PUT", "/latest/api/token",
                                    {"X-aws-ec2-metadata-token-ttl-seconds": IMDS_TOKEN_TTL})
        except urllib.error.HTTPError as e:
            raise self.fail("PUT /latest/api/token: HTTP %d" % e.code)

    def get(self, path):
        """The text at path; None when IMDS answers 404."""
        for fresh in (False, True):
            if self.token is None or fresh:
                self.get_token()
            try:
                return self._call("GET", path, {"X-aws-ec2-metadata-token": self.token})
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    return None
                if e.code == 401 and not fresh:
                    continue  # the token expired or was refused: take a new one once
                raise self.fail("GET %s: HTTP %d" % (path, e.code))
        raise self.fail("GET %s: HTTP 401 with a fresh token" % path)

    def need(self, path, what):
        text = self.get(path)
        if text is None or not text.strip():
            raise self.fail("%s: nothing at GET %s (HTTP 404)" % (what, path))
        return text.strip()

    def credentials(self):
        roles = self.get("/latest/meta-data/iam/security-credentials/")
        role = (roles or "").strip().split("\n")[0].strip()
        if not role:
            raise self.fail("no IAM role is attached to this instance (nothing at "
                            "/latest/meta-data/iam/security-credentials/): attach an instance profile")
        path = "/latest/meta-data/iam/security-credentials/" + urllib.parse.quote(role)
        text = self.need(path, "credentials of role %s" % role)
        try:
            doc = json.loads(text)
            if doc.get("Code", "Success") != "Success":
                raise self.fail("credentials of role %s: %s: %s" % (
                    role, doc.get("Code"), one_line(doc.get("Message", ""))))
            return Credentials(doc["AccessKeyId"], doc["SecretAccessKey"], doc.get("Token", ""),
                               parse_expiration(doc.get("Expiration")))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise self.fail("credentials of role %s: not the JSON IMDS serves" % role)

    def region(self):
        text = self.get("/latest/meta-data/placement/region")
        if text and text.strip():
            return text.strip()
        doc = self.need("/latest/dynamic/instance-identity/document", "the region")
        try:
            return json.loads(doc)["region"]
        except (ValueError, KeyError, TypeError):
            raise self.fail("the region: the instance identity document has no region")

    def instance_id(self):
        return self.need("/latest/meta-data/instance-id", "the instance id")


def parse_expiration(text):
    if not text:
        return None
    try:  # datetime.fromisoformat takes a trailing Z only from Python 3.11
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


class Credentials:
    def __init__(self, access_key, secret_key, token, expiration):
        self.access_key = access_key
        self.secret_key = secret_key
        self.token = token
        self.expiration = expiration


# ---------------------------------------------------------------- signature version 4

def uri_encode(text, keep_slash):
    """AWS's UriEncode: everything but A-Z a-z 0-9 - _ . ~ percent-encoded (and / when asked)."""
    return urllib.parse.quote(text, safe="/~" if keep_slash else "~")


def sigv4_headers(method, url, headers, payload_hash, service, region, creds, now):
    """The headers to send: headers plus host, x-amz-date, the session token and Authorization."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname
    if parts.port and (parts.scheme, parts.port) not in (("http", 80), ("https", 443)):
        host += ":%d" % parts.port
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    out = {k.lower(): v for k, v in headers.items()}
    out["host"] = host
    out["x-amz-date"] = amz_date
    if creds.token:
        out["x-amz-security-token"] = creds.token
    if service == "s3":
        out["x-amz-content-sha256"] = payload_hash
    signed = sorted(out)
    canonical_headers = "".join("%s:%s\n" % (k, " ".join(str(out[k]).split())) for k in signed)
    path = parts.path or "/"
    # The path is sent encoded once; S3 signs it as sent, every other service encodes it again.
    canonical_uri = path if service == "s3" else uri_encode(path, keep_slash=True)
    query = sorted((uri_encode(k, False), uri_encode(v, False))
                   for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    canonical_query = "&".join("%s=%s" % kv for kv in query)
    signed_headers = ";".join(signed)
    canonical = "\n".join([method, canonical_uri, canonical_query, canonical_headers,
                           signed_headers, payload_hash])
    scope = "%s/%s/%s/aws4_request" % (amz_date[:8], region, service)
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode("utf-8")).hexdigest()])
    key = ("AWS4" + creds.secret_key).encode("utf-8")
    for part in (amz_date[:8], region, service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    out["authorization"] = "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s" % (
        creds.access_key, scope, signed_headers, signature)
    return out


# ---------------------------------------------------------------- endpoints

def dns_suffix(region):
    return "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"


def custom_endpoint(service, env):
    """The custom endpoint (a VPC endpoint, a proxy) for service from the SDKs' variables, or None."""
    if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    name = "AWS_ENDPOINT_URL_" + SERVICES[service][0]
    for var in (name, "AWS_ENDPOINT_URL"):
        value = env.get(var, "").strip()
        if value:
            parts = urllib.parse.urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
                raise Failure("%s=%s: must be an http:// or https:// URL with a host and no query" % (
                    var, one_line(value)))
            return value.rstrip("/")
    return None


def service_endpoint(service, region, env):
    custom = custom_endpoint(service, env)
    if custom:
        return custom
    return "https://%s.%s.%s" % (SERVICES[service][2], region, dns_suffix(region))


def s3_object_url(bucket, key, region, env):
    """The URL of s3://bucket/key.

    Virtual-hosted style (bucket.s3.REGION.amazonaws.com) on AWS's own endpoint, as AWS
    recommends; path style for a bucket whose name does not fit a TLS wildcard certificate (dots)
    and for a custom endpoint (a VPC interface endpoint or an emulator answers path style)."""
    path = "/" + uri_encode(key, keep_slash=True)
    custom = custom_endpoint("s3", env)
    if custom:
        return custom + "/" + uri_encode(bucket, False) + path
    if S3_VIRTUAL_HOST_BUCKET.match(bucket):
        return "https://%s.s3.%s.%s%s" % (bucket, region, dns_suffix(region), path)
    return "https://s3.%s.%s/%s%s" % (region, dns_suffix(region), uri_encode(bucket, False), path)


# ---------------------------------------------------------------- AWS client

def local_name(tag):
    return tag.rsplit("}", 1)[-1]


def xml_find(root, name):
    """The first element called name (any namespace) under root, depth first."""
    for el in root.iter():
        if local_name(el.tag) == name:
            return el
    return None


def xml_text(root, name):
    el = xml_find(root, name)
    return (el.text or "").strip() if el is not None else ""


def parse_error(status, headers, body):
    """The AWS error code and message of an error answer, in JSON, XML or no body at all."""
    code, message = "", ""
    text = body.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
            code = str(doc.get("__type") or doc.get("code") or doc.get("Code") or "")
            message = str(doc.get("message") or doc.get("Message") or "")
        except (ValueError, AttributeError):
            pass
    elif text.startswith("<"):
        try:
            root = ET.fromstring(text)
            code, message = xml_text(root, "Code"), xml_text(root, "Message")
        except ET.ParseError:
            pass
    if not code:
        code = (headers.get("x-amzn-ErrorType") or "").split(":")[0]
    code = code.rsplit("#", 1)[-1]  # "com.amazonaws.ssm#ParameterNotFound"
    if not code:
        code = http.client.responses.get(status, "HTTP error").replace(" ", "")
        if not message and text and not text.startswith(("{", "<")):
            message = text
    return AWSError(status, code, one_line(message), headers)


class Client:
    """Signed requests with the instance role, retried with backoff."""

    def __init__(self, imds, region, retries, timeout, backoff, env):
        self.imds = imds
        self.region = region
        self.retries = retries
        self.timeout = timeout
        self.backoff = backoff
        self.env = env
        self.creds = None
        self.creds_read = 0.0
        self.skew = datetime.timedelta(0)
        self.open = opener(use_proxy=True).open

    def now(self):
        return datetime.datetime.now(datetime.timezone.utc) + self.skew

    def credentials(self):
        c = self.creds
        stale = c is not None and c.expiration is not None and \
            c.expiration - self.now() < datetime.timedelta(minutes=1) and time.time() - self.creds_read > 10
        if c is None or stale:
            self.creds = self.imds.credentials()
            self.creds_read = time.time()
        return self.creds

    def adjust_clock(self, err):
        """True when the server's Date says our clock is off by more than a minute: use its time."""
        if err.code not in CLOCK_SKEW:
            return False
        date = err.headers.get("Date")
        try:
            server = email.utils.parsedate_to_datetime(date) if date else None
        except (TypeError, ValueError):
            server = None
        if server is None:
            return False
        if server.tzinfo is None:
            server = server.replace(tzinfo=datetime.timezone.utc)
        offset = server - datetime.datetime.now(datetime.timezone.utc)
        if abs(offset - self.skew) < datetime.timedelta(minutes=1):
            return False
        self.skew = offset
        return True

    def request(self, service, what, method, url, headers=None, body=b"", sink=None, region=None):
        """Send one signed request; returns the answer's body (or sink(response, deadline)'s result).

        what names the request in messages, e.g. "secrets-env DB (ssm:/app/db)"."""
        region = region or self.region
        payload_hash = hashlib.sha256(body).hexdigest()
        attempts = self.retries + 1
        last = None
        wait = False
        for attempt in range(attempts):
            if attempt and wait:
                delay = backoff_delay(self.backoff, attempt)
                notice("%s: %s; retry %d of %d in %.1fs" % (what, last, attempt, self.retries, delay))
                time.sleep(delay)
            wait = True
            creds = self.credentials()
            signed = sigv4_headers(method, url, headers or {}, payload_hash, SERVICES[service][1],
                                   region, creds, self.now())
            signed["user-agent"] = USER_AGENT  # not signed: proxies may rewrite it
            req = urllib.request.Request(url, data=body if method != "GET" else None,
                                         method=method, headers=signed)
            deadline = time.monotonic() + self.timeout
            try:
                with self.open(req, timeout=self.timeout) as resp:
                    if sink is not None:
                        return sink(resp, deadline)
                    return resp.read()
            except urllib.error.HTTPError as e:
                try:
                    err_body = e.read()
                except (http.client.HTTPException, OSError):
                    err_body = b""
                err = parse_error(e.code, e.headers, err_body)
                if err.code in EXPIRED_TOKEN:
                    self.creds = None  # read the role's credentials again, then retry at once
                    last, wait = err.detail, False
                    notice("%s: %s; reading the role's credentials again" % (what, err.code))
                elif self.adjust_clock(err):
                    last, wait = err.detail, False
                    notice("%s: %s; the clock is %.0fs off the server's: signing with the server's time" % (
                        what, err.code, self.skew.total_seconds()))
                elif err.code in THROTTLING or err.code in TRANSIENT or e.code >= 500 or e.code == 429:
                    last = err.detail
                else:
                    raise err.about(what)
            except Transient as e:
                last = e
            except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
                if is_cert_error(e):
                    raise Failure("%s: TLS certificate of %s not trusted: %s" % (
                        what, urllib.parse.urlsplit(url).hostname, transient_reason(e)))
                last = Transient("%s %s: %s" % (method, urllib.parse.urlsplit(url).netloc, transient_reason(e)))
        raise Failure("%s: %s (gave up after %d attempts)" % (what, last, attempts))

    def json_call(self, service, target, payload, what):
        body = json.dumps(payload).encode("utf-8")
        answer = self.request(service, what, "POST", service_endpoint(service, self.region, self.env) + "/",
                              headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target},
                              body=body)
        try:
            doc = json.loads(answer.decode("utf-8"))
        except ValueError:  # the message would hold the answer, and the answer may hold a secret
            raise Failure("%s: the answer is not JSON" % what)
        if not isinstance(doc, dict):
            raise Failure("%s: the answer is not a JSON object" % what)
        return doc

    def query_call(self, service, action, params, what):
        form = [("Action", action), ("Version", "2011-01-01")] + list(params)
        body = urllib.parse.urlencode(form).encode("utf-8")
        answer = self.request(service, what, "POST", service_endpoint(service, self.region, self.env) + "/",
                              headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
                              body=body)
        try:
            return ET.fromstring(answer)
        except ET.ParseError:
            raise Failure("%s: the answer is not XML" % what)


# ---------------------------------------------------------------- commands

def parse_s3_uri(uri):
    if not uri.startswith("s3://"):
        raise Usage("%s: must be s3://BUCKET/KEY" % one_line(uri))
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket or not key:
        raise Usage("%s: must be s3://BUCKET/KEY with both a bucket and a key" % one_line(uri))
    return bucket, key


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_get_object(args):
    parse_s3_uri(args.uri)


def cmd_get_object(client, args):
    bucket, key = parse_s3_uri(args.uri)
    what = "get-object %s" % one_line(args.uri)
    out = os.path.abspath(args.outfile)
    folder = os.path.dirname(out)
    # The object lands in a private temporary file beside OUTFILE and replaces it only complete.
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(out) + ".", suffix=".part", dir=folder)
    except OSError as e:
        raise Failure("%s: cannot write beside %s: %s" % (what, out, e.strerror or type(e).__name__))
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)

            def sink(resp, deadline):
                f.seek(0)
                f.truncate()
                want = resp.headers.get("Content-Length")
                got = 0
                while True:
                    try:
                        chunk = resp.read(1 << 16)
                    except (http.client.HTTPException, OSError) as e:
                        raise Transient("the answer was cut after %d bytes: %s" % (got, transient_reason(e)))
                    if not chunk:
                        break
                    try:
                        f.write(chunk)
                    except OSError as e:  # a full disk is not worth another download
                        raise Failure("%s: cannot write beside %s: %s" % (what, out, e.strerror))
                    got += len(chunk)
                    if time.monotonic() > deadline:
                        raise Transient("not complete within --timeout %gs (%d bytes so far)" % (
                            client.timeout, got))
                if want is not None and want.isdigit() and int(want) != got:
                    raise Transient("the answer was cut: %d of %s bytes" % (got, want))
                return got

            region = client.region
            try:
                size = client.request("s3", what, "GET", s3_object_url(bucket, key, region, client.env),
                                      sink=sink)
            except AWSError as e:
                # A bucket in another region answers 301 (or 400) with its region: ask it there.
                other = e.headers.get("x-amz-bucket-region") if e.headers else None
                if not other or other == region or custom_endpoint("s3", client.env):
                    raise
                notice("%s: the bucket is in %s, not %s: asking there" % (what, other, region))
                size = client.request("s3", what, "GET", s3_object_url(bucket, key, other, client.env),
                                      sink=sink, region=other)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.replace(tmp, out)
        except OSError as e:
            raise Failure("%s: cannot write %s: %s" % (what, out, e.strerror or type(e).__name__))
        tmp = None
        fsync_dir(folder)
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    notice("wrote %s to %s (%d bytes)" % (one_line(args.uri), out, size))


def env_quote(value):
    """The value in double quotes with \\, ", $ and ` escaped: exactly image.EnvQuote in Go, read back
    byte for byte by systemd's EnvironmentFile= and by `set -a; . FILE` in sh."""
    for c in ("\\", '"', "$", "`"):
        value = value.replace(c, "\\" + c)
    return '"' + value + '"'


def parse_secret_ref(arg):
    name, sep, ref = arg.partition("=")
    if not sep or not ENV_NAME.match(name):
        raise Usage("%s: must be NAME=ssm:/parameter/name or NAME=secretsmanager:name-or-arn, "
                    "with NAME a variable name (letters, digits, _; not starting with a digit)" % one_line(arg))
    store, sep, ident = ref.partition(":")
    if store not in ("ssm", "secretsmanager") or not sep or not ident:
        raise Usage("%s: the reference must be ssm:/parameter/name or secretsmanager:name-or-arn, not %s" % (
            name, one_line(ref) or "empty"))
    return name, store, ident


def resolve_secret(client, name, store, ident):
    what = "secrets-env %s (%s:%s)" % (name, store, one_line(ident))
    if store == "ssm":
        doc = client.json_call("ssm", "AmazonSSM.GetParameter", {"Name": ident, "WithDecryption": True}, what)
        value = (doc.get("Parameter") or {}).get("Value")
    else:
        doc = client.json_call("secretsmanager", "secretsmanager.GetSecretValue", {"SecretId": ident}, what)
        value = doc.get("SecretString")
        if value is None and doc.get("SecretBinary") is not None:
            raise Failure("%s: the secret holds binary data (SecretBinary), not text (SecretString): "
                          "an environment file holds text" % what)
    if not isinstance(value, str):
        raise Failure("%s: the answer has no value" % what)
    if "\0" in value:
        raise Failure("%s: the value contains a NUL byte, which an environment file cannot hold" % what)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # its message would quote part of the value
        raise Failure("%s: the value is not valid Unicode (a lone surrogate)" % what)
    return value


def check_secrets_env(args):
    refs = []
    for arg in args.refs:
        name, store, ident = parse_secret_ref(arg)
        if any(name == r[0] for r in refs):
            raise Usage("%s: named twice" % name)
        refs.append((name, store, ident))
    return refs


def cmd_secrets_env(client, args):
    refs = check_secrets_env(args)
    # Every value first, then one append: a failure leaves OUTFILE as it was.
    lines = []
    for name, store, ident in refs:
        lines.append("%s=%s\n" % (name, env_quote(resolve_secret(client, name, store, ident))))
    data = "".join(lines).encode("utf-8")
    try:
        # O_NOFOLLOW: root must not be led to append to another file through a symbolic link.
        fd = os.open(args.outfile, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # the file's last line was not ended: end it, or ours would join it
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise Failure("secrets-env: cannot append to %s: %s" % (args.outfile, e.strerror or type(e).__name__))
    notice("appended %s to %s" % (", ".join(r[0] for r in refs), args.outfile))


WAITING_STATES = ("Pending:Wait", "Warmed:Pending:Wait")


def cmd_complete_lifecycle_action(client, args):
    instance = client.imds.instance_id()
    what = "complete-lifecycle-action %s" % instance
    root = client.query_call("autoscaling", "DescribeAutoScalingInstances",
                             [("InstanceIds.member.1", instance)], what + ": DescribeAutoScalingInstances")
    found = None
    for member in root.iter():
        if local_name(member.tag) == "member" and xml_text(member, "InstanceId") == instance:
            found = member
            break
    if found is None:
        notice("instance %s is not in an Auto Scaling group: no lifecycle action to complete" % instance)
        return
    group = xml_text(found, "AutoScalingGroupName")
    state = xml_text(found, "LifecycleState")
    if state not in WAITING_STATES:
        notice("instance %s in Auto Scaling group %s is %s, not waiting on a lifecycle hook: "
               "nothing to complete" % (instance, group, state or "in no known state"))
        return
    client.query_call("autoscaling", "CompleteLifecycleAction", [
        ("AutoScalingGroupName", group), ("LifecycleHookName", args.hook),
        ("InstanceId", instance), ("LifecycleActionResult", args.result),
    ], "%s: CompleteLifecycleAction (group %s, hook %s, %s)" % (what, group, args.hook, args.result))
    notice("completed lifecycle hook %s of instance %s in Auto Scaling group %s with %s" % (
        args.hook, instance, group, args.result))


# ---------------------------------------------------------------- command line

DESCRIPTION = """\
Signed AWS requests with the instance role, for the baked first-boot deploy.
Credentials and region come from the instance metadata service (IMDSv2)."""

EPILOG = """\
environment:
  AWS_EC2_METADATA_SERVICE_ENDPOINT  instance metadata base URL (default http://169.254.169.254)
  AWS_REGION, AWS_DEFAULT_REGION     region, unless --region is given (default: from IMDS)
  AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL_SSM, AWS_ENDPOINT_URL_SECRETS_MANAGER,
  AWS_ENDPOINT_URL_AUTO_SCALING      custom endpoint of one service (a VPC endpoint)
  AWS_ENDPOINT_URL                   custom endpoint of every service not named above
  AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true  ignore the custom endpoints
  HTTPS_PROXY, NO_PROXY              proxy for AWS APIs (never for IMDS)
Without a custom endpoint the regional endpoints are used: https://SERVICE.REGION.amazonaws.com,
S3 virtual-hosted (https://BUCKET.s3.REGION.amazonaws.com; path style for a bucket name with dots);
with one, S3 requests are path style (ENDPOINT/BUCKET/KEY).

Retried with exponential backoff and full jitter: connection errors, timeouts, HTTP 5xx and
throttling. Not retried: access errors and other 4xx. Expired role credentials are read again.

exit status: 0 done (or nothing to do), 1 a request or a file failed, 2 wrong usage.
On failure exactly one line on stderr names what failed and why; progress goes to stdout.
Secret values never reach stdout, stderr or another process."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        sys.stderr.write("%s: usage: %s (see %s --help)\n" % (PROG, one_line(message), self.prog))
        sys.exit(EXIT_USAGE)


def positive_int(text):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a whole number, got %r" % text)
    if n < 0 or n > 20:
        raise argparse.ArgumentTypeError("must be between 0 and 20, got %d" % n)
    return n


def seconds(text):
    try:
        s = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number of seconds, got %r" % text)
    if not 0 < s <= 3600:
        raise argparse.ArgumentTypeError("must be more than 0 and at most 3600 seconds, got %s" % text)
    return s


def add_common(p, suppress):
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    p.add_argument("--region", default=d(None),
                   help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, then the instance's own)")
    p.add_argument("--retries", type=positive_int, default=d(DEFAULT_RETRIES), metavar="N",
                   help="retries after a failed attempt, 0 to 20 (default %d)" % DEFAULT_RETRIES)
    p.add_argument("--timeout", type=seconds, default=d(DEFAULT_TIMEOUT), metavar="SECONDS",
                   help="bound of one attempt: to connect, for each read, and for a whole "
                        "get-object download (default %g)" % DEFAULT_TIMEOUT)
    p.add_argument("--backoff", type=seconds, default=d(DEFAULT_BACKOFF), metavar="SECONDS",
                   help="first backoff ceiling; retry k waits a random time up to min(%g, SECONDS*2^(k-1)) "
                        "(default %g)" % (BACKOFF_CAP, DEFAULT_BACKOFF))


def build_parser():
    fmt = argparse.RawDescriptionHelpFormatter
    parser = Parser(prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=fmt)
    add_common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    p = sub.add_parser("get-object", help="fetch an S3 object into a file",
                       description="Fetch s3://BUCKET/KEY into OUTFILE: written to a temporary file "
                                   "beside it and renamed when complete, mode 0600.")
    p.add_argument("uri", metavar="s3://BUCKET/KEY")
    p.add_argument("outfile", metavar="OUTFILE")
    add_common(p, suppress=True)
    p.set_defaults(run=cmd_get_object, check=check_get_object)

    p = sub.add_parser("secrets-env",
                       help="append secrets to an environment file",
                       description="Read each secret (SSM GetParameter with decryption; Secrets Manager "
                                   "GetSecretValue SecretString) and append NAME=\"value\" lines to "
                                   "OUTFILE (created 0600 if absent), with \\ \" $ ` escaped: systemd's "
                                   "EnvironmentFile= and `set -a; . OUTFILE` read each value back byte "
                                   "for byte. All values are read before anything is written.")
    p.add_argument("outfile", metavar="OUTFILE")
    p.add_argument("refs", nargs="+", metavar="NAME=REF",
                   help="NAME=ssm:/parameter/name or NAME=secretsmanager:name-or-arn")
    add_common(p, suppress=True)
    p.set_defaults(run=cmd_secrets_env, check=check_secrets_env)

    p = sub.add_parser("complete-lifecycle-action",
                       help="complete this instance's Auto Scaling launch lifecycle action",
                       description="Find this instance (its id from IMDS) with DescribeAutoScalingInstances; "
                                   "if it waits on a lifecycle hook (Pending:Wait or Warmed:Pending:Wait), "
                                   "complete the action of --hook with --result. Not in a group, or not "
                                   "waiting: say so and exit 0.")
    p.add_argument("--hook", required=True, metavar="NAME", help="lifecycle hook name")
    p.add_argument("--result", required=True, choices=["CONTINUE", "ABANDON"])
    add_common(p, suppress=True)
    p.set_defaults(run=cmd_complete_lifecycle_action, check=lambda args: None)
    return parser


def main(argv, env):
    # A name or message with characters the locale cannot show must not turn into a crash.
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    try:
        args.check(args)  # arguments first: a usage error makes no request
        imds = IMDS(env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or DEFAULT_IMDS,
                    args.timeout, args.retries, args.backoff)
        region = args.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or imds.region()
        if not re.match(r"[a-z0-9-]+\Z", region):
            raise Failure("region %s: not a region name such as eu-west-1" % one_line(region))
        client = Client(imds, region, args.retries, args.timeout, args.backoff, env)
        args.run(client, args)
    except Failure as e:
        sys.stderr.write("%s: %s\n" % (PROG, one_line(e, 1000)))
        return EXIT_USAGE if isinstance(e, Usage) else EXIT_FAILED
    except OSError as e:  # a local file: its name and the reason, nothing else
        sys.stderr.write("%s: %s: %s\n" % (PROG, e.filename or args.command, e.strerror or type(e).__name__))
        return EXIT_FAILED
    except Exception as e:  # a bug: where, not the message (it could quote a value)
        tb = e.__traceback__
        while tb.tb_next is not None:
            tb = tb.tb_next
        sys.stderr.write("%s: %s: internal error %s at line %d\n" % (
            PROG, args.command, type(e).__name__, tb.tb_lineno))
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], os.environ))
