package stsauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// call makes the GetWebIdentityToken call for e. It asks for the configured
// duration, shortened to end sessionMargin before the credentials expire
// when their expiry is known; if STS still answers
// SessionDurationEscalationException it halves the duration, down to
// MinDuration, and asks again within the same fetch. It returns the duration
// of the call that answered.
func (ts *TokenSource) call(ctx context.Context, e *entry) (*sts.GetWebIdentityTokenOutput, time.Duration, error) {
	requested, err := ts.sessionDuration(ctx)
	if err != nil {
		return nil, 0, err
	}
	for {
		out, err := ts.client.GetWebIdentityToken(ctx, &sts.GetWebIdentityTokenInput{
			Audience:         e.aud.Values(),
			SigningAlgorithm: aws.String(ts.cfg.algorithm),
			DurationSeconds:  aws.Int32(int32(requested / time.Second)),
			Tags:             ts.cfg.tags,
		}, limitResponse)
		var api smithy.APIError
		if err == nil || !errors.As(err, &api) || api.ErrorCode() != codeSessionEscalation {
			return out, requested, err
		}
		if requested <= MinDuration {
			return nil, requested, fmt.Errorf("%w (STS refused a %v token): %w", ErrCredentialsExpiring, requested, err)
		}
		shorter := max(MinDuration, (requested / 2).Truncate(time.Second))
		if ts.escalationLogged.CompareAndSwap(false, true) {
			ts.cfg.logger.Warn("stsauth: STS refused the token duration because the AWS credentials expire sooner; asking for shorter tokens",
				slog.Duration("refused", requested), slog.Duration("retry", shorter),
				slog.String("hint", "pass the credentials provider (WithCredentials) so the duration is fitted to the session from the start"))
		}
		requested = shorter
	}
}

// sessionDuration is the token duration to ask for: the configured one, or
// less when the credentials expire sooner. It fails with
// ErrCredentialsExpiring when they leave less than MinDuration.
func (ts *TokenSource) sessionDuration(ctx context.Context) (time.Duration, error) {
	d := ts.cfg.duration
	if ts.cfg.credentials == nil {
		return d, nil
	}
	creds, err := ts.cfg.credentials.Retrieve(ctx)
	if err != nil || !creds.CanExpire {
		return d, nil // the STS call reports what is wrong with them
	}
	left := creds.Expires.Sub(ts.now()) - sessionMargin
	if left < MinDuration {
		return 0, fmt.Errorf("%w: they expire at %v", ErrCredentialsExpiring, creds.Expires.UTC().Format(time.RFC3339))
	}
	return min(d, left.Truncate(time.Second)), nil
}
