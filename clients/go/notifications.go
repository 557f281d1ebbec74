package madsidecar

// Notification names: the sidecar's, and the client's own connection events.
const (
	NotifyLockLost      = "lock.lost"
	NotifyPresenceDiff  = "presence.diff"
	NotifyPresenceState = "presence.state"
	NotifyPubSubMessage = "pubsub.message"
	NotifyPubSubDropped = "pubsub.dropped"
	NotifyShutdown      = "shutdown"
	NotifyError         = "error"
	// NotifyConnectionLost is sent by the client itself when an established
	// connection is lost: every lock, lease, presence entry and subscription it held
	// is gone (the sidecar released them), and none is re-taken on reconnect.
	NotifyConnectionLost = "connection.lost"
	// NotifyConnectionRestored is sent by the client itself once it has reconnected
	// and said hello again. Re-subscribe and re-acquire here, deliberately.
	NotifyConnectionRestored = "connection.restored"
)

// Notification is a message the sidecar pushed, or a connection event of the client.
// Payload is the typed payload, by Name:
//
//	lock.lost            *LockLost
//	presence.diff        *PresenceDiff
//	presence.state       *PresenceState
//	pubsub.message       *PubSubMessage
//	pubsub.dropped       *PubSubDropped
//	shutdown             *Shutdown
//	error                *ServerError
//	connection.lost      *ConnectionLost
//	connection.restored  *ConnectionRestored
//
// A name this SDK does not know has a nil Payload (ignore it, or read Raw). Raw is the
// payload map as received (nil for the client's own events).
type Notification struct {
	Name    string
	Payload any
	Raw     map[string]any
}

// LockLost is the payload of lock.lost: a renewed lease of this connection was found
// lost. Stop acting on the resource now; acquire again to go on.
type LockLost struct {
	Name  string `msgpack:"name"`
	Token string `msgpack:"token"`
	Fence int64  `msgpack:"fence"`
}

// PresenceDiff is the payload of presence.diff. Version rises by one per diff; a gap
// means diffs were missed: call PresenceList again.
type PresenceDiff struct {
	Channel string                     `msgpack:"channel"`
	Version int64                      `msgpack:"version"`
	Joins   map[string][]PresenceEntry `msgpack:"joins"`
	Leaves  map[string][]PresenceEntry `msgpack:"leaves"`
}

// PresenceState is the payload of presence.state: the whole state of a channel, which
// replaces the subscriber's (its version may go back).
type PresenceState struct {
	Channel string                     `msgpack:"channel"`
	Version int64                      `msgpack:"version"`
	Members map[string][]PresenceEntry `msgpack:"members"`
}

// PubSubMessage is the payload of pubsub.message.
type PubSubMessage struct {
	Channel string `msgpack:"channel"`
	Message any    `msgpack:"message"`
}

// PubSubDropped is the payload of pubsub.dropped: messages dropped for this
// connection because it was not reading its socket.
type PubSubDropped struct {
	Channel string `msgpack:"channel"`
	Dropped int64  `msgpack:"dropped"`
}

// Shutdown is the payload of shutdown: the sidecar is draining; in-flight requests
// may run DeadlineMs more. Stop sending new work; the client reconnects once the
// sidecar closes the connection.
type Shutdown struct {
	DeadlineMs int64 `msgpack:"deadline_ms"`
}

// ConnectionLost is the payload of the client's connection.lost event.
type ConnectionLost struct {
	Err error
}

// ConnectionRestored is the payload of the client's connection.restored event.
type ConnectionRestored struct {
	Hello HelloResult
}

// decodeNotification types the params of a notification frame.
func decodeNotification(name string, params any) Notification {
	var raw map[string]any
	if a, ok := params.([]any); ok && len(a) > 0 {
		raw, _ = a[0].(map[string]any)
	}
	n := Notification{Name: name, Raw: raw}
	var typed any
	switch name {
	case NotifyLockLost:
		typed = &LockLost{}
	case NotifyPresenceDiff:
		typed = &PresenceDiff{}
	case NotifyPresenceState:
		typed = &PresenceState{}
	case NotifyPubSubMessage:
		typed = &PubSubMessage{}
	case NotifyPubSubDropped:
		typed = &PubSubDropped{}
	case NotifyShutdown:
		typed = &Shutdown{}
	case NotifyError:
		n.Payload = errorFromMap(raw)
		return n
	default:
		return n
	}
	if raw != nil && Decode(raw, typed) == nil {
		n.Payload = typed
	}
	return n
}
