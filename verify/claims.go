package verify

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// AWSNamespace is the claim under which AWS STS nests its own claims: an
// object with aws_account, org_id, ou_path, principal_id and the rest.
const AWSNamespace = "https://sts.amazonaws.com/"

// Claims are the verified claims of an AWS outbound federation token.
// Verify returns them only after the signature, issuer, audience, times,
// account binding, policy and replay checks have passed.
//
// Claims of a token answered from the verified-token cache share their
// slices and maps (Audience, Raw, AWS.OUPath and the tag maps) with every
// other request that carries the same token, possibly at the same time:
// read them, and copy before changing any (writing to a shared tag map
// while another request reads it is a data race).
type Claims struct {
	// Issuer is the iss claim, one of [Config.Issuers].
	Issuer string
	// Subject is the sub claim: the calling principal's ARN (for a role
	// session, the role ARN, not the session ARN).
	Subject string
	// Audience is the aud claim, one or more values; a single string in the
	// token becomes a slice of one.
	Audience []string
	// IssuedAt is the iat claim.
	IssuedAt time.Time
	// Expiry is the exp claim.
	Expiry time.Time
	// NotBefore is the nbf claim, or the zero time if absent, as it is in
	// tokens from AWS.
	NotBefore time.Time
	// ID is the jti claim, unique per token.
	ID string
	// AWS holds the claims under [AWSNamespace].
	AWS AWSClaims
	// Raw is the verified JSON claims set, for any claim not modelled here:
	// decode it, or use [Claims.Unmarshal].
	Raw json.RawMessage
}

// Unmarshal decodes the verified claims set ([Claims.Raw]) into v, for
// claims this package does not model.
func (c *Claims) Unmarshal(v any) error { return json.Unmarshal(c.Raw, v) }

// AWSClaims are the claims AWS STS nests under [AWSNamespace]. A claim the
// token does not carry is the zero value. Session-context claims are set only
// when the calling credentials came from that context.
type AWSClaims struct {
	// Account is aws_account, the 12-digit account of the caller.
	Account string
	// SourceRegion is source_region, the Region the token was requested in.
	SourceRegion string
	// OrgID is org_id, the AWS Organizations ID, such as "o-a1b2c3d4e5".
	OrgID string
	// OUPath is ou_path, the organizational unit paths of the account, such
	// as "o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/". Real tokens carry an
	// array and the documentation a string; both are accepted.
	OUPath []string
	// PrincipalID is principal_id; in real tokens the principal's ARN.
	PrincipalID string
	// PrincipalTags is principal_tags, the tags on the calling principal.
	PrincipalTags map[string]string
	// RequestTags is request_tags, the tags passed to GetWebIdentityToken:
	// chosen by the caller, so fit for routing, never for authorization
	// (see [Policy.RequestTags]).
	RequestTags map[string]string
	// OriginalSessionExp is original_session_exp, when the calling session
	// expires; the zero time if absent or not an RFC 3339 time.
	OriginalSessionExp time.Time
	// FederatedProvider is federated_provider, the identity provider of a
	// federated session.
	FederatedProvider string
	// IdentityStoreUserID is identity_store_user_id, the IAM Identity Center
	// user of an SSO session.
	IdentityStoreUserID string
	// IdentityStoreARN is identity_store_arn.
	IdentityStoreARN string
	// EC2SourceInstanceARN is ec2_source_instance_arn, for an instance role.
	EC2SourceInstanceARN string
	// EC2InstanceSourceVPC is ec2_instance_source_vpc.
	EC2InstanceSourceVPC string
	// EC2InstanceSourcePrivateIPv4 is ec2_instance_source_private_ipv4.
	EC2InstanceSourcePrivateIPv4 string
	// EC2RoleDelivery is ec2_role_delivery, the IMDS version that delivered
	// the credentials.
	EC2RoleDelivery string
	// SourceIdentity is source_identity.
	SourceIdentity string
	// LambdaSourceFunctionARN is lambda_source_function_arn, for a Lambda
	// execution role.
	LambdaSourceFunctionARN string
	// GlueCredentialIssuingService is glue_credential_issuing_service.
	GlueCredentialIssuingService string
}

// wireClaims is the JSON shape of a token's claims set. Standard claims
// are strict; AWS claims are lenient about shapes AWS may change.
type wireClaims struct {
	Iss string       `json:"iss"`
	Sub string       `json:"sub"`
	Aud stringList   `json:"aud"`
	Iat *numericDate `json:"iat"`
	Exp *numericDate `json:"exp"`
	Nbf *numericDate `json:"nbf"`
	Jti string       `json:"jti"`
	AWS *wireAWS     `json:"https://sts.amazonaws.com/"`
}

// wireAWS is the JSON shape of the claims under [AWSNamespace].
type wireAWS struct {
	Account                      lenientString `json:"aws_account"`
	SourceRegion                 lenientString `json:"source_region"`
	OrgID                        lenientString `json:"org_id"`
	OUPath                       stringList    `json:"ou_path"`
	PrincipalID                  lenientString `json:"principal_id"`
	PrincipalTags                tagMap        `json:"principal_tags"`
	RequestTags                  tagMap        `json:"request_tags"`
	OriginalSessionExp           lenientString `json:"original_session_exp"`
	FederatedProvider            lenientString `json:"federated_provider"`
	IdentityStoreUserID          lenientString `json:"identity_store_user_id"`
	IdentityStoreARN             lenientString `json:"identity_store_arn"`
	EC2SourceInstanceARN         lenientString `json:"ec2_source_instance_arn"`
	EC2InstanceSourceVPC         lenientString `json:"ec2_instance_source_vpc"`
	EC2InstanceSourcePrivateIPv4 lenientString `json:"ec2_instance_source_private_ipv4"`
	EC2RoleDelivery              lenientString `json:"ec2_role_delivery"`
	SourceIdentity               lenientString `json:"source_identity"`
	LambdaSourceFunctionARN      lenientString `json:"lambda_source_function_arn"`
	GlueCredentialIssuingService lenientString `json:"glue_credential_issuing_service"`
}

// decodeClaims parses a claims set. It checks shapes only; the values are
// checked by the verifier.
func decodeClaims(payload []byte) (*wireClaims, error) {
	var w wireClaims
	if err := json.Unmarshal(payload, &w); err != nil {
		return nil, errors.New("claims are not a JSON object of the expected shape")
	}
	return &w, nil
}

// claims returns the typed Claims of w, whose payload is raw.
func (w *wireClaims) claims(raw []byte) *Claims {
	c := &Claims{
		Issuer:   w.Iss,
		Subject:  w.Sub,
		Audience: w.Aud,
		ID:       w.Jti,
		Raw:      raw,
	}
	if w.Iat != nil {
		c.IssuedAt = w.Iat.t
	}
	if w.Exp != nil {
		c.Expiry = w.Exp.t
	}
	if w.Nbf != nil {
		c.NotBefore = w.Nbf.t
	}
	if a := w.AWS; a != nil {
		c.AWS = AWSClaims{
			Account:                      string(a.Account),
			SourceRegion:                 string(a.SourceRegion),
			OrgID:                        string(a.OrgID),
			OUPath:                       a.OUPath,
			PrincipalID:                  string(a.PrincipalID),
			PrincipalTags:                a.PrincipalTags,
			RequestTags:                  a.RequestTags,
			FederatedProvider:            string(a.FederatedProvider),
			IdentityStoreUserID:          string(a.IdentityStoreUserID),
			IdentityStoreARN:             string(a.IdentityStoreARN),
			EC2SourceInstanceARN:         string(a.EC2SourceInstanceARN),
			EC2InstanceSourceVPC:         string(a.EC2InstanceSourceVPC),
			EC2InstanceSourcePrivateIPv4: string(a.EC2InstanceSourcePrivateIPv4),
			EC2RoleDelivery:              string(a.EC2RoleDelivery),
			SourceIdentity:               string(a.SourceIdentity),
			LambdaSourceFunctionARN:      string(a.LambdaSourceFunctionARN),
			GlueCredentialIssuingService: string(a.GlueCredentialIssuingService),
		}
		if a.OriginalSessionExp != "" {
			if t, err := time.Parse(time.RFC3339, string(a.OriginalSessionExp)); err == nil {
				c.AWS.OriginalSessionExp = t
			}
		}
	}
	return c
}

// numericDate is a JWT NumericDate: seconds since the epoch, possibly with
// a fraction.
type numericDate struct{ t time.Time }

// maxNumericDate bounds NumericDates to years before 10000, so conversion
// cannot overflow.
const maxNumericDate = 253402300799

// UnmarshalJSON accepts a JSON number between 0 and year 9999.
func (d *numericDate) UnmarshalJSON(b []byte) error {
	// b is one valid JSON value (the decoder checked): a number starts with
	// a digit or a minus sign.
	if len(b) == 0 || (b[0] != '-' && (b[0] < '0' || b[0] > '9')) {
		return errors.New("NumericDate is not a number")
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return errors.New("NumericDate is not a number")
	}
	if f < 0 || f > maxNumericDate || math.IsNaN(f) {
		return errors.New("NumericDate out of range")
	}
	sec, frac := math.Modf(f)
	d.t = time.Unix(int64(sec), int64(frac*1e9))
	return nil
}

// stringList is a JSON string or array of strings, as aud and ou_path are.
type stringList []string

// UnmarshalJSON accepts a string or an array of strings; null is empty.
func (l *stringList) UnmarshalJSON(b []byte) error {
	if s, ok := plainString(b); ok {
		*l = stringList{s}
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*l = stringList{s}
		return nil
	}
	var a []string
	if err := json.Unmarshal(b, &a); err != nil {
		return errors.New("want a string or an array of strings")
	}
	*l = a
	return nil
}

// lenientString is a claim AWS documents as a string. Any other JSON value
// is kept as its compact JSON text rather than failing the token, so a
// change of shape on AWS's side does not lock every caller out.
type lenientString string

// UnmarshalJSON accepts any JSON value.
func (s *lenientString) UnmarshalJSON(b []byte) error {
	if v, ok := plainString(b); ok {
		*s = lenientString(v)
		return nil
	}
	var v string
	if err := json.Unmarshal(b, &v); err == nil {
		*s = lenientString(v)
		return nil
	}
	if bytes.Equal(b, []byte("null")) {
		*s = ""
		return nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return err
	}
	*s = lenientString(buf.String())
	return nil
}

// tagMap is a tag claim: an object of tag key to value. Values that are not
// strings are kept as their compact JSON text.
type tagMap map[string]string

// UnmarshalJSON accepts an object (or null).
func (m *tagMap) UnmarshalJSON(b []byte) error {
	var raw map[string]lenientString
	if err := json.Unmarshal(b, &raw); err != nil {
		return errors.New("tags are not a JSON object")
	}
	if raw == nil {
		*m = nil
		return nil
	}
	out := make(tagMap, len(raw))
	for k, v := range raw {
		out[k] = string(v)
	}
	*m = out
	return nil
}

// plainString returns the value of b, one valid JSON value, if it is a
// string with no escapes: the common case, decoded without the reflection
// of [json.Unmarshal]. Other strings are left to it.
func plainString(b []byte) (string, bool) {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return "", false
	}
	in := b[1 : len(b)-1]
	for _, c := range in {
		if c == '\\' || c == '"' || c < 0x20 || c >= utf8.RuneSelf {
			return "", false
		}
	}
	return string(in), true
}
