package auth

import (
	"errors"
	"testing"
	"time"
)

// FuzzVerify feeds arbitrary token strings to the verifier: every input must
// end in a valid claim set or exactly one of the three sentinel errors, never
// a panic. Seeds in testdata/fuzz/FuzzVerify.
func FuzzVerify(f *testing.F) {
	tok, err := Mint(testSecret, testUser, testEmail, testNow, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tok)
	f.Add("")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.eyJ1c2VySWQiOiJ4In0.")
	v, err := NewVerifier(Config{Secret: testSecret, Now: func() time.Time { return testNow }})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(token)
		if err == nil {
			if c.UserID == "" || c.ExpiresAt.IsZero() {
				t.Fatalf("accepted without claims: %+v", c)
			}
			return
		}
		n := 0
		for _, s := range []error{ErrTokenRequired, ErrInvalidToken, ErrTokenExpired} {
			if errors.Is(err, s) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("error %v matches %d sentinels", err, n)
		}
	})
}
