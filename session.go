package stsauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
)

// A token never outlives the calling session: STS refuses, with
// SessionDurationEscalationException, a token whose lifetime would extend
// past the expiry of the credentials that ask for it (role sessions, SSO
// sessions). With 1 h tokens and credentials that expire in 20 minutes,
// every fetch would fail.

// sessionMargin is how long before the credentials' expiry a requested
// token must end, for the clocks of the caller and STS to disagree a little.
const sessionMargin = time.Minute

// codeSessionEscalation is the STS error code of a token that would outlive
// the calling session.
const codeSessionEscalation = "SessionDurationEscalationException"

// ErrCredentialsExpiring is wrapped by the error of a fetch that cannot get
// a token of at least [MinDuration] because the AWS credentials expire
// sooner. Renewing the credentials is the cure.
var ErrCredentialsExpiring = errors.New("stsauth: the AWS credentials expire in less than the 60 s shortest token lifetime")

// call makes the GetWebIdentityToken call for e, with the primary client or,
// when fallbacks are set ([WithFallback]), with the regions in turn until one
// answers; deadline is when the fetch times out. It returns the duration of
// the call that answered, why it is shorter than the configured one, and
// the region that answered (nil without fallbacks).
func (ts *TokenSource) call(ctx context.Context, e *entry, deadline time.Time) (*sts.GetWebIdentityTokenOutput, time.Duration, Shortening, *region, error) {
	requested, why, err := ts.sessionDuration(ctx)
	if err != nil {
		return nil, 0, NotShortened, nil, err
	}
	if ts.regions == nil {
		out, requested, why, err := ts.ask(ctx, ts.client, e, requested, why)
		return out, requested, why, nil, err
	}
	return ts.askRegions(ctx, e, requested, why, deadline)
}

// ask makes the GetWebIdentityToken call for e with client. It asks for
// requested, the configured duration or less (why), shortened to end
// sessionMargin before the credentials expire when their expiry is known; if
// STS still answers SessionDurationEscalationException it halves the
// duration, down to MinDuration, and asks again within the same fetch. It
// returns the duration of the call that answered and why it is shorter than
// the configured one.
func (ts *TokenSource) ask(ctx context.Context, client GetWebIdentityTokenAPIClient, e *entry, requested time.Duration, why Shortening) (*sts.GetWebIdentityTokenOutput, time.Duration, Shortening, error) {
	for {
		out, err := client.GetWebIdentityToken(ctx, &sts.GetWebIdentityTokenInput{
			Audience:         e.aud.Values(),
			SigningAlgorithm: aws.String(ts.cfg.algorithm),
			DurationSeconds:  aws.Int32(int32(requested / time.Second)),
			Tags:             ts.cfg.tags,
		}, limitResponse)
		var api smithy.APIError
		if err == nil || !errors.As(err, &api) || api.ErrorCode() != codeSessionEscalation {
			return out, requested, why, err
		}
		if requested <= MinDuration {
			return nil, requested, why, fmt.Errorf("%w (STS refused a %v token): %w", ErrCredentialsExpiring, requested, err)
		}
		shorter := max(MinDuration, (requested / 2).Truncate(time.Second))
		if ts.escalationLogged.CompareAndSwap(false, true) {
			ts.cfg.logger.Warn("stsauth: STS refused the token duration because the AWS credentials expire sooner; asking for shorter tokens",
				slog.Duration("refused", requested), slog.Duration("retry", shorter),
				slog.String("hint", "pass the credentials provider (WithCredentials) so the duration is fitted to the session from the start"))
		}
		requested, why = shorter, ShortenedAfterRefusal
	}
}

// sessionDuration is the token duration to ask for: the configured one, or
// less when the credentials expire sooner (ShortenedToSession). It fails with
// ErrCredentialsExpiring when they leave less than MinDuration, and with
// ErrNoCredentials when the STS client's own provider finds none, for the
// call would fail the same way, only later.
func (ts *TokenSource) sessionDuration(ctx context.Context) (time.Duration, Shortening, error) {
	d := ts.cfg.duration
	if ts.cfg.credentials == nil {
		return d, NotShortened, nil
	}
	creds, err := ts.cfg.credentials.Retrieve(ctx)
	if err != nil && ts.cfg.credentialsFromClient {
		return 0, NotShortened, fmt.Errorf("%w: %w", ErrNoCredentials, err)
	}
	if err != nil || !creds.CanExpire {
		return d, NotShortened, nil // the STS call reports what is wrong with them
	}
	left := creds.Expires.Sub(ts.now()) - sessionMargin
	if left < MinDuration {
		return 0, NotShortened, fmt.Errorf("%w: they expire at %v", ErrCredentialsExpiring, creds.Expires.UTC().Format(time.RFC3339))
	}
	if left < d {
		return left.Truncate(time.Second), ShortenedToSession, nil
	}
	return d, NotShortened, nil
}

// A Shortening says why a [Token] lives less than the duration its
// [TokenSource] was configured with ([WithDuration]).
type Shortening uint8

// The reasons a token is shorter than configured.
const (
	// NotShortened: the token lives the configured duration.
	NotShortened Shortening = iota
	// ShortenedToSession: the AWS credentials expire before a token of the
	// configured duration would end, so the source asked for one that ends
	// a minute before them. Tokens get shorter as the credentials near
	// their expiry, and are refreshed more often; credentials with a longer
	// session (a role's maximum session duration) avoid it.
	ShortenedToSession
	// ShortenedAfterRefusal: STS refused the longer duration with
	// SessionDurationEscalationException, because the credentials' session
	// ends sooner, and the source asked again for half, down to
	// [MinDuration]. It happens when the credentials' expiry is not known
	// up front: pass their provider with [WithCredentials].
	ShortenedAfterRefusal
	// ShortenedBySTS: STS returned a token that lives less than the
	// duration asked for, by its own iat and exp claims or its Expiration.
	// AWS STS does not do that: check that the endpoint is AWS STS.
	ShortenedBySTS
)

// String returns the Shortening's name, such as "shortened to session".
func (s Shortening) String() string {
	switch s {
	case NotShortened:
		return "not shortened"
	case ShortenedToSession:
		return "shortened to session"
	case ShortenedAfterRefusal:
		return "shortened after refusal"
	case ShortenedBySTS:
		return "shortened by STS"
	}
	return "Shortening(" + strconv.Itoa(int(s)) + ")"
}
