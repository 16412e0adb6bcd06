package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	testUser  = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
	testEmail = "parent@example.com"
)

var (
	testSecret = []byte("0123456789abcdef0123456789abcdef")
	testNow    = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
)

// nodeToken builds a token byte for byte as jsonwebtoken's
// jwt.sign({userId, email}, secret, {expiresIn}) does, without golang-jwt,
// so the verifier is tested against the issuer's format and not against itself.
func nodeToken(secret []byte, header, payload string) string {
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(signing))
	return signing + "." + enc.EncodeToString(m.Sum(nil))
}

func pemOf(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func sign(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVerify(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaPEM := pemOf(t, &rsaKey.PublicKey)
	ecPEM := pemOf(t, &ecKey.PublicKey)
	now := func() time.Time { return testNow }
	iat, exp := testNow.Add(-time.Hour).Unix(), testNow.Add(time.Hour).Unix()
	good := jwt.MapClaims{"userId": testUser, "email": testEmail, "iat": iat, "exp": exp}
	with := func(k string, v any) jwt.MapClaims {
		c := jwt.MapClaims{}
		for kk, vv := range good {
			c[kk] = vv
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}

	hsOnly := Config{Secret: testSecret, Now: now}
	all := Config{Secret: testSecret, PublicKeysPEM: append(append([]byte{}, rsaPEM...), ecPEM...), Now: now}
	rsaOnly := Config{PublicKeysPEM: rsaPEM, Now: now}

	noneToken := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good)
	tests := []struct {
		name  string
		cfg   Config
		token string
		want  error // nil: valid
	}{
		{"jsonwebtoken HS256", hsOnly, nodeToken(testSecret, `{"alg":"HS256","typ":"JWT"}`,
			`{"userId":"`+testUser+`","email":"`+testEmail+`","iat":1795000000,"exp":`+itoa(exp)+`}`), nil},
		{"golang-jwt HS256", hsOnly, sign(t, jwt.SigningMethodHS256, testSecret, good), nil},
		{"bearer prefix", hsOnly, "Bearer " + sign(t, jwt.SigningMethodHS256, testSecret, good), nil},
		{"upper-case user id", hsOnly, sign(t, jwt.SigningMethodHS256, testSecret, with("userId", strings.ToUpper(testUser))), nil},
		{"RS256", all, sign(t, jwt.SigningMethodRS256, rsaKey, good), nil},
		{"ES256", all, sign(t, jwt.SigningMethodES256, ecKey, good), nil},

		{"empty", hsOnly, "", ErrTokenRequired},
		{"blank", hsOnly, "   ", ErrTokenRequired},
		{"expired", hsOnly, sign(t, jwt.SigningMethodHS256, testSecret, with("exp", testNow.Add(-time.Second).Unix())), ErrTokenExpired},
		{"expired and forged", hsOnly, sign(t, jwt.SigningMethodHS256, []byte("another secret of 32 bytes......"), with("exp", iat)), ErrInvalidToken},
		{"wrong secret", hsOnly, sign(t, jwt.SigningMethodHS256, []byte("another secret of 32 bytes......"), good), ErrInvalidToken},
		{"alg none", all, noneToken, ErrInvalidToken},
		{"HS512 with the right secret", hsOnly, sign(t, jwt.SigningMethodHS512, testSecret, good), ErrInvalidToken},
		{"HS256 keyed with the RSA public key", rsaOnly, sign(t, jwt.SigningMethodHS256, rsaPEM, good), ErrInvalidToken},
		{"HS256 keyed with the RSA public key, secret also set", all, sign(t, jwt.SigningMethodHS256, rsaPEM, good), ErrInvalidToken},
		{"RS256 without RSA keys", hsOnly, sign(t, jwt.SigningMethodRS256, rsaKey, good), ErrInvalidToken},
		{"RS384", all, sign(t, jwt.SigningMethodRS384, rsaKey, good), ErrInvalidToken},
		{"no exp", hsOnly, sign(t, jwt.SigningMethodHS256, testSecret, with("exp", nil)), ErrInvalidToken},
		{"not yet valid", hsOnly, sign(t, jwt.SigningMethodHS256, testSecret, with("nbf", testNow.Add(time.Hour).Unix())), ErrInvalidToken},
		{"no userId", hsOnly, sign(t, jwt.SigningMethodHS256, testSecret, with("userId", nil)), ErrInvalidToken},
		{"userId not a uuid", hsOnly, sign(t, jwt.SigningMethodHS256, testSecret, with("userId", "42")), ErrInvalidToken},
		{"userId a number", hsOnly, sign(t, jwt.SigningMethodHS256, testSecret, with("userId", 42)), ErrInvalidToken},
		{"garbage", hsOnly, "not.a.token", ErrInvalidToken},
		{"two parts", hsOnly, "abc.def", ErrInvalidToken},
		{"too long", hsOnly, strings.Repeat("a", MaxTokenLen+1), ErrInvalidToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := NewVerifier(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			c, err := v.Verify(tt.token)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if c.UserID != testUser || c.Email != testEmail || c.ExpiresAt.Unix() != exp {
					t.Fatalf("claims = %+v", c)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify error = %v, want %v", err, tt.want)
			}
			if strings.Contains(err.Error(), tt.token) && tt.token != "" && len(tt.token) > 10 {
				t.Fatalf("error %q contains the token", err)
			}
		})
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestNewVerifierRefuses(t *testing.T) {
	rsaSmall, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ecP384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		want error
	}{
		{"nothing", Config{}, ErrNoKey},
		{"short secret", Config{Secret: []byte("0123456789abcdef0123456789abcde")}, ErrWeakSecret},
		{"not PEM", Config{PublicKeysPEM: []byte("hello")}, nil},
		{"private key block", Config{PublicKeysPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})}, nil},
		{"small RSA key", Config{PublicKeysPEM: pemOf(t, &rsaSmall.PublicKey)}, nil},
		{"P-384 key", Config{PublicKeysPEM: pemOf(t, &ecP384.PublicKey)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := NewVerifier(tt.cfg)
			if err == nil || v != nil {
				t.Fatalf("NewVerifier = %v, %v; want an error", v, err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestMintRoundTrip(t *testing.T) {
	tok, err := Mint(testSecret, testUser, testEmail, testNow, 7*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(Config{Secret: testSecret, Now: func() time.Time { return testNow.Add(7*24*time.Hour - time.Second) }})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.UserID != testUser || c.Email != testEmail || !c.ExpiresAt.Equal(testNow.Add(7*24*time.Hour)) {
		t.Fatalf("claims = %+v", c)
	}
	late, _ := NewVerifier(Config{Secret: testSecret, Now: func() time.Time { return testNow.Add(7*24*time.Hour + time.Second) }})
	if _, err := late.Verify(tok); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("after expiry: %v", err)
	}
	if _, err := Mint(testSecret[:31], testUser, testEmail, testNow, time.Hour); !errors.Is(err, ErrWeakSecret) {
		t.Fatalf("short secret: %v", err)
	}
	if _, err := Mint(testSecret, "bob", testEmail, testNow, time.Hour); err == nil {
		t.Fatal("non-uuid user id minted")
	}
}

func TestMessages(t *testing.T) {
	tests := []struct {
		err         error
		reason, msg string
	}{
		{ErrTokenRequired, "token_required", "Authentication error: token required"},
		{errors.Join(ErrInvalidToken, errors.New("x")), "invalid_token", "Authentication error: invalid token"},
		{ErrTokenExpired, "token_expired", "Authentication error: token expired"},
		{errors.New("other"), "invalid_token", "Authentication error: invalid token"},
	}
	for _, tt := range tests {
		if got := Reason(tt.err); got != tt.reason {
			t.Errorf("Reason(%v) = %q, want %q", tt.err, got, tt.reason)
		}
		if got := ClientMessage(tt.err); got != tt.msg {
			t.Errorf("ClientMessage(%v) = %q, want %q", tt.err, got, tt.msg)
		}
	}
}

// TestClaimNamesExact: a userId in another case is not the userId, so a
// body naming two users is read as the API reads it.
func TestClaimNamesExact(t *testing.T) {
	v, err := NewVerifier(Config{Secret: testSecret, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	exp := itoa(testNow.Add(time.Hour).Unix())
	other := "b0000000-0000-4000-8000-0000000000ff"
	c, err := v.Verify(nodeToken(testSecret, `{"alg":"HS256","typ":"JWT"}`, `{"userId":"`+testUser+`","UserID":"`+other+`","exp":`+exp+`}`))
	if err != nil || c.UserID != testUser {
		t.Fatalf("Verify: %+v, %v; want user %s", c, err, testUser)
	}
	if _, err := v.Verify(nodeToken(testSecret, `{"alg":"HS256","typ":"JWT"}`, `{"USERID":"`+testUser+`","exp":`+exp+`}`)); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("USERID alone: %v, want invalid", err)
	}
}

// TestClaimTypes: jsonwebtoken refuses a token whose exp or nbf is not a
// JSON number ("invalid exp value"), and its sign never writes an iat that
// is not one; golang-jwt's NumericDate reads "1795000000" (a string) as a
// date. Such tokens are refused like any malformed one.
func TestClaimTypes(t *testing.T) {
	v, err := NewVerifier(Config{Secret: testSecret, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	iat, exp := testNow.Add(-time.Hour).Unix(), testNow.Add(time.Hour).Unix()
	body := func(claims string) string {
		return nodeToken(testSecret, `{"alg":"HS256","typ":"JWT"}`, `{"userId":"`+testUser+`","email":"`+testEmail+`"`+claims+`}`)
	}
	tests := []struct {
		name   string
		claims string
		want   error // nil: valid
	}{
		{"numbers", `,"iat":` + itoa(iat) + `,"exp":` + itoa(exp), nil},
		{"fractional exp", `,"iat":` + itoa(iat) + `,"exp":` + itoa(exp) + `.0`, nil},
		{"exponent exp", `,"exp":` + strconv.FormatFloat(float64(exp), 'e', -1, 64), nil},
		{"numeric nbf", `,"exp":` + itoa(exp) + `,"nbf":` + itoa(iat), nil},
		{"no iat", `,"exp":` + itoa(exp), nil},

		{"exp a string", `,"iat":` + itoa(iat) + `,"exp":"` + itoa(exp) + `"`, ErrInvalidToken},
		{"exp a past string", `,"exp":"` + itoa(iat) + `"`, ErrInvalidToken},
		{"exp null", `,"exp":null`, ErrInvalidToken},
		{"exp true", `,"exp":true`, ErrInvalidToken},
		{"exp an array", `,"exp":[` + itoa(exp) + `]`, ErrInvalidToken},
		{"exp an object", `,"exp":{"n":` + itoa(exp) + `}`, ErrInvalidToken},
		{"nbf a string", `,"exp":` + itoa(exp) + `,"nbf":"` + itoa(iat) + `"`, ErrInvalidToken},
		{"nbf null", `,"exp":` + itoa(exp) + `,"nbf":null`, ErrInvalidToken},
		{"iat a string", `,"exp":` + itoa(exp) + `,"iat":"` + itoa(iat) + `"`, ErrInvalidToken},
		{"iat null", `,"exp":` + itoa(exp) + `,"iat":null`, ErrInvalidToken},
		{"past exp still expired", `,"exp":` + itoa(iat), ErrTokenExpired},
		// Names are exact, as JSON.parse reads them: another case is
		// another claim, and a name given twice counts by its last.
		{"EXP does not stand for exp", `,"exp":` + itoa(iat) + `,"EXP":` + itoa(exp), ErrTokenExpired},
		{"Exp alone is no exp", `,"Exp":` + itoa(exp), ErrInvalidToken},
		{"exp twice, the last counts", `,"exp":` + itoa(iat) + `,"exp":` + itoa(exp), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Verify(body(tt.claims))
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if c.ExpiresAt.Unix() != exp {
					t.Fatalf("ExpiresAt %v, want %v", c.ExpiresAt, time.Unix(exp, 0))
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify error = %v, want %v", err, tt.want)
			}
		})
	}
}
