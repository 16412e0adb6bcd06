package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/koordi/koordi-realtime/schema"
)

// MinSecretLen is the shortest HS256 secret accepted: 256 bits, the size of
// the hash, as RFC 7518 section 3.2 requires.
const MinSecretLen = 32

// MaxTokenLen bounds the work spent on one token. Koordi's tokens are about
// 250 bytes; anything this long is not one of them.
const MaxTokenLen = 8 << 10

// Errors a caller branches on. Verify wraps exactly one of the first three.
var (
	ErrTokenRequired = errors.New("token required")
	ErrInvalidToken  = errors.New("invalid token")
	ErrTokenExpired  = errors.New("token expired")

	// ErrWeakSecret is returned by NewVerifier and Mint for a secret shorter
	// than MinSecretLen.
	ErrWeakSecret = errors.New("JWT secret shorter than 32 bytes")
	// ErrNoKey is returned by NewVerifier when neither a secret nor a public
	// key is configured.
	ErrNoKey = errors.New("no JWT secret or public key configured")
)

// Claims are the claims of a verified token.
type Claims struct {
	// UserID is the Koordi user id, a uuid in lower case.
	UserID string
	Email  string
	// ExpiresAt is when the token stops being valid; the gateway closes the
	// socket then.
	ExpiresAt time.Time
}

// Config configures a Verifier. Zero values are the documented defaults.
type Config struct {
	// Secret is the HS256 secret (JWT_SECRET), at least MinSecretLen bytes.
	// Empty disables HS256; then PublicKeysPEM must hold a key.
	Secret []byte
	// PublicKeysPEM holds zero or more PEM "PUBLIC KEY" (PKIX) or
	// "RSA PUBLIC KEY" (PKCS #1) blocks: RSA keys verify RS256, P-256 keys
	// ES256. A token verifies if any key of its algorithm's family accepts it.
	PublicKeysPEM []byte
	// Leeway tolerates clock skew on exp and nbf. Default 0, as jsonwebtoken.
	Leeway time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verifier checks tokens. Build it with NewVerifier.
type Verifier struct {
	secret  []byte
	rsaKeys []*rsa.PublicKey
	ecKeys  []*ecdsa.PublicKey
	parser  *jwt.Parser
}

// NewVerifier validates cfg and returns a Verifier.
func NewVerifier(cfg Config) (*Verifier, error) {
	v := &Verifier{}
	if len(cfg.Secret) > 0 {
		if len(cfg.Secret) < MinSecretLen {
			return nil, fmt.Errorf("%w (got %d)", ErrWeakSecret, len(cfg.Secret))
		}
		v.secret = append([]byte(nil), cfg.Secret...)
	}
	if len(cfg.PublicKeysPEM) > 0 {
		if err := v.addPEM(cfg.PublicKeysPEM); err != nil {
			return nil, err
		}
	}
	var methods []string
	if v.secret != nil {
		methods = append(methods, jwt.SigningMethodHS256.Alg())
	}
	if len(v.rsaKeys) > 0 {
		methods = append(methods, jwt.SigningMethodRS256.Alg())
	}
	if len(v.ecKeys) > 0 {
		methods = append(methods, jwt.SigningMethodES256.Alg())
	}
	if len(methods) == 0 {
		return nil, ErrNoKey
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.Leeway),
	}
	if cfg.Now != nil {
		opts = append(opts, jwt.WithTimeFunc(cfg.Now))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

func (v *Verifier) addPEM(data []byte) error {
	found := false
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		var key any
		var err error
		switch block.Type {
		case "PUBLIC KEY":
			key, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			key, err = x509.ParsePKCS1PublicKey(block.Bytes)
		default:
			return fmt.Errorf("JWT public keys: unexpected PEM block %q (want PUBLIC KEY)", block.Type)
		}
		if err != nil {
			return fmt.Errorf("JWT public keys: %w", err)
		}
		switch k := key.(type) {
		case *rsa.PublicKey:
			if k.N.BitLen() < 2048 {
				return fmt.Errorf("JWT public keys: RSA key of %d bits, want at least 2048", k.N.BitLen())
			}
			v.rsaKeys = append(v.rsaKeys, k)
		case *ecdsa.PublicKey:
			if k.Curve != elliptic.P256() {
				return fmt.Errorf("JWT public keys: ECDSA curve %s, want P-256 (ES256)", k.Curve.Params().Name)
			}
			v.ecKeys = append(v.ecKeys, k)
		default:
			return fmt.Errorf("JWT public keys: unsupported key type %T", key)
		}
		found = true
	}
	if !found {
		return errors.New("JWT public keys: no PEM block found")
	}
	return nil
}

// koordiClaims is the token body as jsonwebtoken writes it. The dates are
// read as strictly as jsonwebtoken reads them (see numericDate); the other
// registered claims (iss, sub, aud) are not checked, by jsonwebtoken without
// options either, and so are not read.
type koordiClaims struct {
	UserID    string      `json:"userId"`
	Email     string      `json:"email"`
	ExpiresAt numericDate `json:"exp"`
	NotBefore numericDate `json:"nbf"`
	IssuedAt  numericDate `json:"iat"`
}

// UnmarshalJSON reads the claims by their exact names, as jsonwebtoken
// (JSON.parse) does. encoding/json would match names in any case: a body
// with "exp" in the past and "EXP" in the future, or "userId" and "UserID",
// would be read differently here than by the API. A name given twice counts
// once, the last, as in JSON.parse.
func (c *koordiClaims) UnmarshalJSON(b []byte) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return err
	}
	for _, f := range [...]struct {
		name string
		dst  any
	}{
		{"userId", &c.UserID}, {"email", &c.Email},
		{"exp", &c.ExpiresAt}, {"nbf", &c.NotBefore}, {"iat", &c.IssuedAt},
	} {
		if raw, ok := fields[f.name]; ok {
			if err := json.Unmarshal(raw, f.dst); err != nil {
				return fmt.Errorf("claim %s: %w", f.name, err)
			}
		}
	}
	return nil
}

func (c *koordiClaims) GetExpirationTime() (*jwt.NumericDate, error) { return c.ExpiresAt.date, nil }
func (c *koordiClaims) GetNotBefore() (*jwt.NumericDate, error)      { return c.NotBefore.date, nil }
func (c *koordiClaims) GetIssuedAt() (*jwt.NumericDate, error)       { return c.IssuedAt.date, nil }
func (c *koordiClaims) GetIssuer() (string, error)                   { return "", nil }
func (c *koordiClaims) GetSubject() (string, error)                  { return "", nil }
func (c *koordiClaims) GetAudience() (jwt.ClaimStrings, error)       { return nil, nil }

// numericDate is a date claim that must be a JSON number when present.
// jsonwebtoken refuses an exp or nbf of any other type ("invalid exp
// value") and its sign never writes an iat that is not a number, whereas
// jwt.NumericDate also reads a string holding digits, and a null as absent:
// a token carrying "exp":"1795000000" would pass here and nowhere else.
type numericDate struct{ date *jwt.NumericDate } // nil when absent

func (d *numericDate) UnmarshalJSON(b []byte) error {
	// encoding/json calls this for null too: null is not a number either.
	if len(b) == 0 || (b[0] != '-' && (b[0] < '0' || b[0] > '9')) {
		return errors.New("date claim is not a number")
	}
	d.date = new(jwt.NumericDate)
	if err := d.date.UnmarshalJSON(b); err != nil {
		return fmt.Errorf("date claim: %w", err)
	}
	return nil
}

// mintClaims is what Mint signs: Koordi's claims, written by golang-jwt.
type mintClaims struct {
	UserID string `json:"userId"`
	Email  string `json:"email"`
	jwt.RegisteredClaims
}

// keyFor picks the key by the algorithm's family, so a key of one type is
// never handed to a method of another.
func (v *Verifier) keyFor(t *jwt.Token) (any, error) {
	switch t.Method.(type) {
	case *jwt.SigningMethodHMAC:
		if v.secret == nil {
			return nil, errors.New("no secret configured")
		}
		return v.secret, nil
	case *jwt.SigningMethodRSA:
		set := jwt.VerificationKeySet{}
		for _, k := range v.rsaKeys {
			set.Keys = append(set.Keys, k)
		}
		return set, nil
	case *jwt.SigningMethodECDSA:
		set := jwt.VerificationKeySet{}
		for _, k := range v.ecKeys {
			set.Keys = append(set.Keys, k)
		}
		return set, nil
	}
	return nil, fmt.Errorf("unexpected signing method %s", t.Method.Alg())
}

// Verify checks token and returns its claims. The error wraps
// ErrTokenRequired, ErrInvalidToken or ErrTokenExpired.
func (v *Verifier) Verify(token string) (Claims, error) {
	token = strings.TrimSpace(token)
	// Some clients send the Authorization header form.
	if len(token) > 7 && strings.EqualFold(token[:7], "bearer ") {
		token = strings.TrimSpace(token[7:])
	}
	if token == "" {
		return Claims{}, ErrTokenRequired
	}
	if len(token) > MaxTokenLen {
		return Claims{}, fmt.Errorf("%w: %d bytes", ErrInvalidToken, len(token))
	}
	var c koordiClaims
	if _, err := v.parser.ParseWithClaims(token, &c, v.keyFor); err != nil {
		// jwt checks the signature before the claims, so "expired" is only
		// ever said of a token we issued.
		if errors.Is(err, jwt.ErrTokenExpired) {
			return Claims{}, fmt.Errorf("%w: %v", ErrTokenExpired, err)
		}
		return Claims{}, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	// Rooms are named after the user id and the database prints uuids in
	// lower case, so anything else could never match a published room.
	if !schema.IsUUID(c.UserID) {
		return Claims{}, fmt.Errorf("%w: userId claim is not a uuid", ErrInvalidToken)
	}
	return Claims{
		UserID:    strings.ToLower(c.UserID),
		Email:     c.Email,
		ExpiresAt: c.ExpiresAt.date.Time, // required: the parser refuses a token without it
	}, nil
}

// Reason is a short label for err, for metrics and logs: "token_required",
// "token_expired" or "invalid_token".
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrTokenRequired):
		return "token_required"
	case errors.Is(err, ErrTokenExpired):
		return "token_expired"
	}
	return "invalid_token"
}

// ClientMessage is the CONNECT_ERROR message for err, the text Koordi's front
// end matches on. It never includes the wrapped detail.
func ClientMessage(err error) string {
	switch {
	case errors.Is(err, ErrTokenRequired):
		return "Authentication error: token required"
	case errors.Is(err, ErrTokenExpired):
		return "Authentication error: token expired"
	}
	return "Authentication error: invalid token"
}

// Mint signs an HS256 token with the claims Koordi's API issues
// ({userId, email, iat, exp}), valid for ttl from now. It is for development
// and tests; production tokens come from Koordi's API.
func Mint(secret []byte, userID, email string, now time.Time, ttl time.Duration) (string, error) {
	if len(secret) < MinSecretLen {
		return "", fmt.Errorf("%w (got %d)", ErrWeakSecret, len(secret))
	}
	if !schema.IsUUID(userID) {
		return "", fmt.Errorf("user id %q is not a uuid", userID)
	}
	c := mintClaims{
		UserID: userID,
		Email:  email,
		RegisteredClaims: jwt.RegisteredClaims{
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}
