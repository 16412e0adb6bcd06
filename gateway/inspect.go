package gateway

// Rooms returns the rooms a socket of user is put in when it connects now:
// its user room and one per calendar it is an accepted member of, in the
// gateway's membership view (as of the transactions published so far). The
// inspector shows them for a pasted token; nothing else needs them.
func (g *Gateway) Rooms(user string) []string {
	// The write lock: view.rooms fills the view's room-name cache.
	g.idx.mu.Lock()
	defer g.idx.mu.Unlock()
	return g.idx.view.rooms(user)
}
