package service

import (
	"errors"

	"github.com/koordi/koordi-realtime/gateway/auth"
)

// ErrToken is a token Rooms refused; the error also says why, as a refused
// CONNECT would.
var ErrToken = errors.New("token refused")

// Rooms verifies token as a CONNECT would (signature, expiry, the gateway's
// keys) and returns its user's id and the rooms a socket with it is put in
// now, from the gateway's membership view: exactly what that token's socket
// receives anyway, nothing of other users. It is for the inspector's page,
// which cannot know a pasted token's calendars. Called once per page
// connect, so the verifier is built per call (no state in Service).
func (s *Service) Rooms(token string) (user string, rooms []string, err error) {
	g := s.cfg.Gateway
	v, err := auth.NewVerifier(auth.Config{Secret: g.JWTSecret, PublicKeysPEM: g.JWTPublicKeysPEM, Leeway: g.JWTLeeway, Now: g.Now})
	if err != nil {
		return "", nil, err
	}
	claims, err := v.Verify(token)
	if err != nil {
		return "", nil, errors.Join(ErrToken, errors.New(auth.ClientMessage(err)))
	}
	return claims.UserID, s.gateway.Rooms(claims.UserID), nil
}
