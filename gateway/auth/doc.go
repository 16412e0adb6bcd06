// Package auth verifies the JSON Web Tokens Koordi's API issues and mints
// development tokens of the same shape.
//
// Koordi signs tokens with Node's jsonwebtoken: HS256 over a shared secret,
// claims {"userId", "email", "iat", "exp"}. A [Verifier] accepts exactly that,
// plus tokens signed by optional RSA (RS256) or ECDSA P-256 (ES256) public keys.
//
// # Claims
//
// exp is required; exp, nbf and iat, when present, must be JSON numbers, as
// jsonwebtoken requires of exp and nbf (and as its sign always writes iat).
// A token whose date is a string ("exp":"1795000000"), null or anything
// else is malformed: [ErrInvalidToken], never [ErrTokenExpired]. userId must
// be a uuid. iss, sub and aud are neither checked nor read, as by
// jsonwebtoken without options.
//
// # Algorithms
//
// The accepted algorithms follow from the configured keys, never from the
// token: a secret allows HS256, an RSA key RS256, a P-256 key ES256. "none"
// is never accepted, and a public key is never used as an HMAC secret (the
// HS/RS confusion attack), because the key is chosen by the algorithm's family
// and each family only ever sees keys of its own type.
//
// # Errors
//
// [Verifier.Verify] returns errors that match exactly one of
// [ErrTokenRequired], [ErrInvalidToken] or [ErrTokenExpired] with errors.Is.
// [Reason] maps them to a short label for metrics and [ClientMessage] to the
// text Koordi's front end matches on ("Authentication error: …"). The
// wrapped detail is for logs; it never contains the token.
//
// # Concurrency
//
// A Verifier is immutable after [NewVerifier] and safe for concurrent use.
package auth
