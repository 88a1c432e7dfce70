package auth

import (
	"errors"
	"fmt"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestEachReasonMeansItsConnackCode(t *testing.T) {
	want := map[Reason][2]byte{ // MQTT 5, MQTT 3.1.1
		ReasonUnknownUser:       {0x86, 0x04},
		ReasonWrongPassword:     {0x86, 0x04},
		ReasonThrottled:         {0x9F, 0x03},
		ReasonTokenMalformed:    {0x86, 0x04},
		ReasonTokenBadSignature: {0x86, 0x04},
		ReasonTokenUnknownKey:   {0x86, 0x04},
		ReasonTokenAlgorithm:    {0x86, 0x04},
		ReasonTokenExpired:      {0x86, 0x04},
		ReasonTokenNotYetValid:  {0x86, 0x04},
		ReasonTokenClaims:       {0x86, 0x04},
		ReasonClientIDMismatch:  {0x85, 0x02},
		ReasonNoCredentials:     {0x87, 0x05},
		ReasonAnonymousRefused:  {0x87, 0x05},
		ReasonCertNoIdentity:    {0x87, 0x05},
		ReasonCertRevoked:       {0x87, 0x05},
	}
	assert.Len(t, Reasons, len(want), "Reasons lists every reason")
	label := regexp.MustCompile(`^[a-z]+(_[a-z]+)*$`)
	for _, r := range Reasons {
		codes, ok := want[r]
		if !assert.True(t, ok, "reason %s has no expected code", r) {
			continue
		}
		assert.Regexp(t, label, string(r), "a reason is a snake_case metric label")
		f := &Failure{Method: "x", Reason: r}
		assert.Equal(t, codes[0], f.ConnackCode(5), "%s on MQTT 5", r)
		assert.Equal(t, codes[1], f.ConnackCode(4), "%s on MQTT 3.1.1", r)
		assert.Equal(t, codes[1], f.ConnackCode(3), "%s on MQTT 3.1", r)
		wrapped := fmt.Errorf("connect: %w", f)
		assert.Equal(t, codes[0], ConnackCode(wrapped, 5), "a wrapped failure keeps its code")
	}
	assert.Equal(t, byte(0x87), ConnackCode(errors.New("other"), 5), "another error means not authorized")
	assert.Equal(t, byte(0x05), ConnackCode(errors.New("other"), 4))
}

func TestFailureTextNamesMethodReasonAndDetail(t *testing.T) {
	assert.Equal(t, "auth: jwt: token_claims: issuer not accepted", fail("jwt", ReasonTokenClaims, "issuer not accepted").Error())
	assert.Equal(t, "auth: anonymous_refused", fail("", ReasonAnonymousRefused, "").Error())
}
