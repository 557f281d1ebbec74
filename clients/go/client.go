package madsidecar

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"time"
)

// Version is this SDK's version, sent in hello.
const Version = "0.1.0"

// Defaults.
const (
	DefaultSocketPath         = "/run/madsidecar/madsidecar.sock"
	DefaultTimeout            = 10 * time.Second
	DefaultMaxFrameBytes      = 4 * 1024 * 1024
	DefaultNotificationBuffer = 1024
	DefaultReconnectMinDelay  = 50 * time.Millisecond
	DefaultReconnectMaxDelay  = 2 * time.Second
	DefaultClientName         = "madsidecar-go"
)

// Options configure a Client. The zero value is usable.
type Options struct {
	// SocketPath of the sidecar; "" means $MADSIDECAR_SOCKET, else
	// /run/madsidecar/madsidecar.sock.
	SocketPath string
	// Namespace selected by hello after every (re)connection; "" keeps the sidecar's
	// default ("default"), or whatever a later Client.Hello selected.
	Namespace string
	// ClientName sent in hello; "" means "madsidecar-go".
	ClientName string
	// Timeout of a call when its context has no earlier deadline; 0 means
	// DefaultTimeout, a negative value no timeout. A call that sends wait_ms gets that
	// much more.
	Timeout time.Duration
	// DisableReconnect: once the connection is lost, every call fails with
	// ErrConnectionLost instead of waiting for a new connection.
	DisableReconnect bool
	// ReconnectMinDelay and ReconnectMaxDelay bound the exponential backoff (with
	// +-20% jitter) between reconnection attempts; 0 means 50 ms and 2 s.
	ReconnectMinDelay time.Duration
	ReconnectMaxDelay time.Duration
	// MaxFrameBytes is the largest frame the client accepts from the sidecar; 0 means
	// 4 MiB (the sidecar's default). A frame header over it closes the connection: the
	// body is never read or allocated, and pending calls fail with a
	// *FrameTooLargeError (ErrFrameTooLarge, ErrProtocol).
	MaxFrameBytes int
	// NotificationBuffer is the capacity of the Notifications channel; 0 means 1024.
	// When it is full, new notifications are dropped (DroppedNotifications counts
	// them): the reader never blocks on a slow consumer.
	NotificationBuffer int
	// OnConnectionLost, if set, is called (on its own goroutine) when an established
	// connection is lost, in addition to the connection.lost notification.
	OnConnectionLost func(err error)
}

// Client is a connection to the sidecar, safe for concurrent use by many goroutines.
// Concurrent calls are pipelined on the one connection and matched to their replies by
// msgid; one goroutine reads every reply and notification.
//
// When the connection drops, pending calls fail with ErrConnectionLost, the
// application gets a connection.lost notification, and (unless DisableReconnect) the
// client reconnects in the background with backoff and says hello again, with the same
// namespace. Nothing else is replayed: locks, cache leases, presence entries and
// subscriptions belonged to the old connection and died with it; re-taking a lock
// silently could let two holders act at once.
type Client struct {
	opts     Options
	path     string
	timeout  time.Duration
	maxRecv  int
	notes    chan Notification
	dropped  atomic.Uint64
	ctx      context.Context // canceled by Close
	cancel   context.CancelFunc
	nmu      sync.RWMutex
	notesOff bool

	mu         sync.Mutex
	cur        *conn
	ready      chan struct{} // closed when cur is set or the client is closed
	closed     bool
	namespace  string
	serverInfo *HelloResult
	lastErr    error
}

// SocketPath resolves the socket path: explicit, else $MADSIDECAR_SOCKET, else the
// default.
func SocketPath(explicit string) string {
	if explicit != "" {
		return explicit
	}
	if env := os.Getenv("MADSIDECAR_SOCKET"); env != "" {
		return env
	}
	return DefaultSocketPath
}

// Connect dials the sidecar and says hello (with opts.Namespace, if set) before
// returning. opts may be nil. A first connection that fails is an error (it is not
// retried); later losses are handled by reconnecting.
func Connect(ctx context.Context, opts *Options) (*Client, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.ClientName == "" {
		o.ClientName = DefaultClientName
	}
	if o.ReconnectMinDelay <= 0 {
		o.ReconnectMinDelay = DefaultReconnectMinDelay
	}
	if o.ReconnectMaxDelay <= 0 {
		o.ReconnectMaxDelay = DefaultReconnectMaxDelay
	}
	if o.NotificationBuffer <= 0 {
		o.NotificationBuffer = DefaultNotificationBuffer
	}
	c := &Client{
		opts:      o,
		path:      SocketPath(o.SocketPath),
		timeout:   o.Timeout,
		maxRecv:   o.MaxFrameBytes,
		notes:     make(chan Notification, o.NotificationBuffer),
		ready:     make(chan struct{}),
		namespace: o.Namespace,
	}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	if c.maxRecv <= 0 {
		c.maxRecv = DefaultMaxFrameBytes
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	cn, info, err := c.dialAndHello(ctx)
	if err != nil {
		c.cancel()
		return nil, err
	}
	c.mu.Lock()
	if cn.isDead() {
		c.mu.Unlock()
		c.cancel()
		return nil, &connLostError{msg: "connection closed right after hello", cause: cn.deadErr}
	}
	c.cur, c.serverInfo = cn, info
	close(c.ready)
	c.mu.Unlock()
	return c, nil
}

// Path is the socket path in use.
func (c *Client) Path() string { return c.path }

// ServerInfo is the result of the last hello (nil before the first).
func (c *Client) ServerInfo() *HelloResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.serverInfo
}

// Connected reports whether a connection is established now.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur != nil
}

// Notifications is the channel every notification arrives on, in order: the
// sidecar's (lock.lost, presence.diff, presence.state, pubsub.message,
// pubsub.dropped, shutdown, error, and names this SDK does not know yet, with a nil
// Payload) and the client's own connection.lost and connection.restored. It is closed
// by Close. A full channel drops new notifications (see DroppedNotifications).
func (c *Client) Notifications() <-chan Notification { return c.notes }

// DroppedNotifications is how many notifications were dropped because the
// Notifications channel was full.
func (c *Client) DroppedNotifications() uint64 { return c.dropped.Load() }

// Close closes the connection and stops reconnecting. Pending calls fail with
// ErrClosed; the Notifications channel is closed.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	cn := c.cur
	c.cur = nil
	if cn == nil {
		close(c.ready)
	}
	c.mu.Unlock()
	c.cancel()
	if cn != nil {
		cn.fail(ErrClosed)
	}
	c.nmu.Lock()
	c.notesOff = true
	close(c.notes)
	c.nmu.Unlock()
	return nil
}

func (c *Client) deliver(n Notification) {
	c.nmu.RLock()
	defer c.nmu.RUnlock()
	if c.notesOff {
		return
	}
	select {
	case c.notes <- n:
	default:
		c.dropped.Add(1)
	}
}

// ---------------------------------------------------------------------------------------
// Connections.

type reply struct {
	msg message
	err error
}

type pendingCall struct{ ch chan reply }

type conn struct {
	c       *Client
	nc      net.Conn
	maxSend int // the sidecar's max_frame_bytes, once hello told it

	mu      sync.Mutex
	pending map[uint32]*pendingCall
	nextID  uint32
	dead    bool
	deadErr error
	srvErr  *ServerError // the last `error` notification: why the sidecar closed, often

	wmu   sync.Mutex
	wbuf  []byte
	spare []byte
	wake  chan struct{}
	done  chan struct{} // closed by fail
}

func (c *Client) dialAndHello(ctx context.Context) (*conn, *HelloResult, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		return nil, nil, fmt.Errorf("madsidecar: connect to %s: %w", c.path, err)
	}
	cn := &conn{c: c, nc: nc, pending: make(map[uint32]*pendingCall), maxSend: DefaultMaxFrameBytes,
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	go cn.readLoop()
	go cn.writeLoop()
	c.mu.Lock()
	ns := c.namespace
	c.mu.Unlock()
	args := HelloRequest{Client: c.opts.ClientName, Version: Version, Namespace: ns}
	var info HelloResult
	if err := c.roundTripInto(ctx, cn, "hello", args, 0, &info); err != nil {
		cn.fail(ErrClosed)
		return nil, nil, err
	}
	if info.MaxFrameBytes > 0 {
		cn.maxSend = int(info.MaxFrameBytes)
	}
	return cn, &info, nil
}

func (cn *conn) isDead() bool {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.dead
}

// fail closes the connection and fails every pending call with err.
func (cn *conn) fail(err error) {
	cn.mu.Lock()
	if cn.dead {
		cn.mu.Unlock()
		return
	}
	cn.dead, cn.deadErr = true, err
	pending := cn.pending
	cn.pending = nil
	cn.mu.Unlock()
	close(cn.done)
	_ = cn.nc.Close()
	for _, pc := range pending {
		pc.ch <- reply{err: err}
	}
}

func (cn *conn) register(pcs []*pendingCall, ids []uint32) error {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.dead {
		return cn.deadErr
	}
	for i, pc := range pcs {
		for {
			cn.nextID++ // uint32: wraps around
			if _, busy := cn.pending[cn.nextID]; !busy {
				break
			}
		}
		ids[i] = cn.nextID
		cn.pending[cn.nextID] = pc
	}
	return nil
}

// unregister forgets a call; false when its reply (or failure) is already on its way.
func (cn *conn) unregister(id uint32, pc *pendingCall) bool {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.pending[id] == pc {
		delete(cn.pending, id)
		return true
	}
	return false
}

// send queues a frame for the connection's writer goroutine, which writes everything
// queued in one write: a burst of concurrent calls goes out in a few large writes, and
// a caller never blocks on a socket the sidecar is not reading (its timeout still
// fires).
func (cn *conn) send(frame []byte) {
	cn.wmu.Lock()
	cn.wbuf = append(cn.wbuf, frame...)
	cn.wmu.Unlock()
	select {
	case cn.wake <- struct{}{}:
	default: // the writer is awake already, and will see the frame
	}
}

func (cn *conn) writeLoop() {
	for {
		select {
		case <-cn.wake:
		case <-cn.done:
			return
		}
		for {
			cn.wmu.Lock()
			buf := cn.wbuf
			if len(buf) == 0 {
				cn.wmu.Unlock()
				break
			}
			cn.wbuf, cn.spare = cn.spare[:0], nil
			cn.wmu.Unlock()
			if _, err := cn.nc.Write(buf); err != nil {
				cn.fail(&connLostError{msg: "writing to " + cn.c.path, cause: err})
				return
			}
			if cap(buf) <= 1<<20 { // keep the buffer, unless a big pipeline grew it
				cn.wmu.Lock()
				cn.spare = buf[:0]
				cn.wmu.Unlock()
			}
		}
	}
}

func (cn *conn) readLoop() {
	c := cn.c
	br := bufio.NewReaderSize(cn.nc, 64<<10)
	var hdr [4]byte
	var err error
	for {
		if _, err = io.ReadFull(br, hdr[:]); err != nil {
			break
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n == 0 {
			err = protocolErrorf("the sidecar sent a zero-length frame")
			break
		}
		if uint64(n) > uint64(c.maxRecv) {
			// Never read (or allocate) the body: the stream is unusable now.
			err = &FrameTooLargeError{Size: uint64(n), Limit: c.maxRecv, Incoming: true}
			break
		}
		body := make([]byte, n)
		if _, err = io.ReadFull(br, body); err != nil {
			break
		}
		var msg message
		if msg, err = parseMessage(body); err != nil {
			break
		}
		if msg.kind == 1 {
			cn.resolve(msg)
		} else {
			cn.notify(msg)
		}
	}
	var pe *protocolError
	var fe *FrameTooLargeError
	if !errors.As(err, &pe) && !errors.As(err, &fe) {
		cn.mu.Lock()
		srv := cn.srvErr
		cn.mu.Unlock()
		if srv != nil {
			err = &connLostError{msg: "the sidecar closed " + c.path, cause: srv}
		} else {
			err = &connLostError{msg: "reading from " + c.path, cause: err}
		}
	}
	cn.fail(err)
	c.onConnLost(cn)
}

func (cn *conn) resolve(msg message) {
	if msg.msgid > 0xFFFFFFFF {
		return
	}
	id := uint32(msg.msgid)
	cn.mu.Lock()
	pc := cn.pending[id]
	if pc != nil {
		delete(cn.pending, id)
	}
	cn.mu.Unlock()
	if pc != nil { // else: a call that timed out; its late reply is dropped quietly
		pc.ch <- reply{msg: msg}
	}
}

func (cn *conn) notify(msg message) {
	n := decodeNotification(msg.name, msg.params)
	if se, ok := n.Payload.(*ServerError); ok {
		cn.mu.Lock()
		cn.srvErr = se
		cn.mu.Unlock()
	}
	cn.c.deliver(n)
}

func (c *Client) onConnLost(cn *conn) {
	c.mu.Lock()
	if c.cur != cn || c.closed {
		c.mu.Unlock()
		return
	}
	c.cur = nil
	c.ready = make(chan struct{})
	c.lastErr = cn.deadErr
	c.mu.Unlock()
	err := cn.deadErr
	c.deliver(Notification{Name: NotifyConnectionLost, Payload: &ConnectionLost{Err: err}})
	if c.opts.OnConnectionLost != nil {
		go c.opts.OnConnectionLost(err)
	}
	if !c.opts.DisableReconnect {
		go c.reconnectLoop()
	}
}

func (c *Client) reconnectLoop() {
	delay := c.opts.ReconnectMinDelay
	for {
		jittered := time.Duration(float64(delay) * (0.8 + 0.4*rand.Float64()))
		t := time.NewTimer(jittered)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(delay*2, c.opts.ReconnectMaxDelay)
		ctx, cancel := c.ctx, context.CancelFunc(func() {})
		if c.timeout > 0 {
			ctx, cancel = context.WithTimeout(c.ctx, c.timeout)
		}
		cn, info, err := c.dialAndHello(ctx)
		cancel()
		c.mu.Lock()
		if err != nil {
			c.lastErr = err
			c.mu.Unlock()
			continue
		}
		if c.closed {
			c.mu.Unlock()
			cn.fail(ErrClosed)
			return
		}
		if cn.isDead() {
			c.lastErr = cn.deadErr
			c.mu.Unlock()
			continue
		}
		c.cur, c.serverInfo = cn, info
		close(c.ready)
		c.mu.Unlock()
		c.deliver(Notification{Name: NotifyConnectionRestored, Payload: &ConnectionRestored{Hello: *info}})
		return
	}
}

// ---------------------------------------------------------------------------------------
// Calls.

// callTimer is a call's client-side deadline: the context's, or the default timeout
// (plus wait_ms), whichever is sooner.
type callTimer struct {
	t       *time.Timer
	c       <-chan time.Time
	limit   time.Duration
	fromCtx bool
}

func (c *Client) newTimer(ctx context.Context, wait time.Duration) callTimer {
	if c.timeout < 0 {
		_, has := ctx.Deadline()
		return callTimer{fromCtx: has}
	}
	limit := c.timeout + wait
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= limit {
		return callTimer{fromCtx: true}
	}
	t := time.NewTimer(limit)
	return callTimer{t: t, c: t.C, limit: limit}
}

func (ct *callTimer) stop() {
	if ct.t != nil {
		ct.t.Stop()
	}
}

func (ct *callTimer) expired(what string) error {
	return &timeoutError{msg: fmt.Sprintf("%s: no reply within %v", what, ct.limit)}
}

func ctxError(ctx context.Context, what string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &timeoutError{msg: what + ": the context's deadline passed", fromCtx: true}
	}
	return fmt.Errorf("madsidecar: %s: %w", what, ctx.Err())
}

// getConn returns the current connection, waiting for a reconnection if needed.
func (c *Client) getConn(ctx context.Context, ct *callTimer, what string) (*conn, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		if cn := c.cur; cn != nil {
			c.mu.Unlock()
			return cn, nil
		}
		if c.opts.DisableReconnect {
			err := &connLostError{msg: "not connected to " + c.path + " and reconnecting is off", cause: c.lastErr}
			c.mu.Unlock()
			return nil, err
		}
		ready := c.ready
		c.mu.Unlock()
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, ctxError(ctx, what)
		case <-ct.c:
			c.mu.Lock()
			last := c.lastErr
			c.mu.Unlock()
			return nil, &timeoutError{msg: fmt.Sprintf("%s: not reconnected to %s within %v (last error: %v)", what, c.path, ct.limit, last)}
		}
	}
}

// roundTrip sends one request on cn and waits for its reply.
func (c *Client) roundTrip(ctx context.Context, cn *conn, ct *callTimer, method string, args any) (message, error) {
	pc := &pendingCall{ch: make(chan reply, 1)}
	var id [1]uint32
	if err := cn.register([]*pendingCall{pc}, id[:]); err != nil {
		return message{}, err
	}
	b := getEncBuf()
	err := b.appendRequest(id[0], method, args)
	if err == nil && b.buf.Len()-4 > cn.maxSend {
		err = &FrameTooLargeError{Size: uint64(b.buf.Len() - 4), Limit: cn.maxSend}
	}
	if err != nil {
		putEncBuf(b)
		cn.unregister(id[0], pc)
		return message{}, err
	}
	cn.send(b.buf.Bytes())
	putEncBuf(b)
	select {
	case r := <-pc.ch:
		return r.msg, r.err
	case <-ctx.Done():
		if !cn.unregister(id[0], pc) {
			r := <-pc.ch
			return r.msg, r.err
		}
		return message{}, ctxError(ctx, method)
	case <-ct.c:
		if !cn.unregister(id[0], pc) {
			r := <-pc.ch
			return r.msg, r.err
		}
		return message{}, ct.expired(method)
	}
}

func (c *Client) roundTripInto(ctx context.Context, cn *conn, method string, args any, wait time.Duration, out any) error {
	ct := c.newTimer(ctx, wait)
	defer ct.stop()
	msg, err := c.roundTrip(ctx, cn, &ct, method, args)
	if err != nil {
		return err
	}
	return msg.into(out)
}

// into decodes a response: its error as a *ServerError, else its result into out.
func (m *message) into(out any) error {
	errMap, result, err := m.responseParts()
	if err != nil {
		return err
	}
	if errMap != nil {
		return errorFromMap(errMap)
	}
	if out == nil {
		return nil
	}
	if p, ok := out.(*any); ok {
		*p = result
		return nil
	}
	return assign(reflect.ValueOf(out).Elem(), result, "result")
}

func (c *Client) callInto(ctx context.Context, method string, args any, wait time.Duration, out any) error {
	ct := c.newTimer(ctx, wait)
	defer ct.stop()
	cn, err := c.getConn(ctx, &ct, method)
	if err != nil {
		return err
	}
	msg, err := c.roundTrip(ctx, cn, &ct, method, args)
	if err != nil {
		return err
	}
	return msg.into(out)
}

func call[T any](ctx context.Context, c *Client, method string, args any, wait time.Duration) (T, error) {
	var out T
	err := c.callInto(ctx, method, args, wait, &out)
	return out, err
}

// Call sends any method with any arguments (a typed request struct, a map[string]any
// or nil) and returns its result decoded without loss (see DecodeValue): the escape
// hatch for methods this SDK does not know yet. A wait_ms in a map's arguments extends
// the timeout as for the typed methods.
func (c *Client) Call(ctx context.Context, method string, args any) (any, error) {
	var out any
	err := c.callInto(ctx, method, args, waitOf(args), &out)
	return out, err
}

// CallInto is Call decoding the result into out (see Decode).
func (c *Client) CallInto(ctx context.Context, method string, args any, out any) error {
	return c.callInto(ctx, method, args, waitOf(args), out)
}

type waiter interface{ waitTime() time.Duration }

func waitOf(args any) time.Duration {
	switch a := args.(type) {
	case waiter:
		return a.waitTime()
	case map[string]any:
		switch w := a["wait_ms"].(type) {
		case int:
			return time.Duration(w) * time.Millisecond
		case int64:
			return time.Duration(w) * time.Millisecond
		}
	}
	return 0
}

// Request is one call of a Pipeline.
type Request struct {
	Method string
	Args   any // a typed request struct, a map[string]any or nil
}

// Response is the outcome of one call of a Pipeline: Value (decoded without loss) or
// Err (a *ServerError, or the connection's failure or a timeout).
type Response struct {
	Value any
	Err   error
}

// Decode stores the result into out (see Decode), or returns the call's error.
func (r Response) Decode(out any) error {
	if r.Err != nil {
		return r.Err
	}
	return Decode(r.Value, out)
}

// Pipeline sends every request in one go and waits for all the replies, reading them
// while it is still writing (so batches of any size complete). The responses are in
// the order of reqs. The returned error is non-nil only when nothing could be sent;
// the whole batch shares one timeout (the default timeout plus the largest wait_ms,
// or the context's deadline).
func (c *Client) Pipeline(ctx context.Context, reqs []Request) ([]Response, error) {
	var wait time.Duration
	for _, r := range reqs {
		wait = max(wait, waitOf(r.Args))
	}
	ct := c.newTimer(ctx, wait)
	defer ct.stop()
	cn, err := c.getConn(ctx, &ct, "pipeline")
	if err != nil {
		return nil, err
	}
	pcs := make([]*pendingCall, len(reqs))
	for i := range pcs {
		pcs[i] = &pendingCall{ch: make(chan reply, 1)}
	}
	ids := make([]uint32, len(reqs))
	if err := cn.register(pcs, ids); err != nil {
		return nil, err
	}
	out := make([]Response, len(reqs))
	b := getEncBuf()
	for i, r := range reqs {
		start := b.buf.Len()
		err := b.appendRequest(ids[i], r.Method, r.Args)
		if err == nil && b.buf.Len()-start-4 > cn.maxSend {
			err = &FrameTooLargeError{Size: uint64(b.buf.Len() - start - 4), Limit: cn.maxSend}
			b.buf.Truncate(start)
		}
		if err != nil {
			cn.unregister(ids[i], pcs[i])
			out[i].Err = err
			pcs[i] = nil
		}
	}
	cn.send(b.buf.Bytes())
	putEncBuf(b)
	var stop error
	for i, pc := range pcs {
		if pc == nil {
			continue
		}
		var r reply
		if stop == nil {
			select {
			case r = <-pc.ch:
			case <-ctx.Done():
				stop = ctxError(ctx, "pipeline")
			case <-ct.c:
				stop = ct.expired("pipeline")
			}
		}
		if stop != nil {
			if cn.unregister(ids[i], pc) {
				out[i].Err = stop
				continue
			}
			r = <-pc.ch
		}
		if r.err != nil {
			out[i].Err = r.err
			continue
		}
		out[i].Err = r.msg.into(&out[i].Value)
	}
	return out, nil
}
