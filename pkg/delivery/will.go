package delivery

import "github.com/fleetgate/fleetgate/pkg/session"

func setUsername(w *session.Will, u string) { _ = w; _ = u }
