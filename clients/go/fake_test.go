package madsidecar

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// A scripted sidecar on a Unix socket, for what the real one will not do on demand:
// answer out of order, or send frames over the client's limit.

type fakeRequest struct {
	msgid  uint32
	method string
	args   map[string]any
}

type fakeConn struct {
	nc net.Conn
	br *bufio.Reader
	wm sync.Mutex
}

func (f *fakeConn) read() (fakeRequest, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(f.br, hdr[:]); err != nil {
		return fakeRequest{}, err
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	if _, err := io.ReadFull(f.br, body); err != nil {
		return fakeRequest{}, err
	}
	v, err := DecodeValue(body)
	if err != nil {
		return fakeRequest{}, err
	}
	a := v.([]any)
	r := fakeRequest{msgid: uint32(a[1].(int64)), method: a[2].(string)}
	if p := a[3].([]any); len(p) == 1 {
		r.args = p[0].(map[string]any)
	}
	return r, nil
}

func (f *fakeConn) reply(msgid uint32, result any) {
	b := getEncBuf()
	defer putEncBuf(b)
	b.buf.Write([]byte{0, 0, 0, 0})
	_ = b.enc.EncodeArrayLen(4)
	_ = b.enc.EncodeUint(1)
	_ = b.enc.EncodeUint(uint64(msgid))
	_ = b.enc.EncodeNil()
	_ = b.enc.Encode(result)
	binary.BigEndian.PutUint32(b.buf.Bytes(), uint32(b.buf.Len()-4))
	f.wm.Lock()
	defer f.wm.Unlock()
	_, _ = f.nc.Write(b.buf.Bytes())
}

// fakeSidecar answers hello itself and hands every connection to serve.
func fakeSidecar(t *testing.T, serve func(*fakeConn)) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fake.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			f := &fakeConn{nc: nc, br: bufio.NewReader(nc)}
			go func() {
				defer nc.Close()
				hello, err := f.read()
				if err != nil || hello.method != "hello" {
					return
				}
				f.reply(hello.msgid, map[string]any{"server": "madsidecar", "protocol": 1,
					"namespace": "default", "max_frame_bytes": DefaultMaxFrameBytes})
				serve(f)
			}()
		}
	}()
	return path
}

// TestFakeOutOfOrder: replies in reverse order reach the calls they answer.
func TestFakeOutOfOrder(t *testing.T) {
	const n = 100
	path := fakeSidecar(t, func(f *fakeConn) {
		var reqs []fakeRequest
		for len(reqs) < n {
			r, err := f.read()
			if err != nil {
				return
			}
			reqs = append(reqs, r)
		}
		for i := len(reqs) - 1; i >= 0; i-- {
			f.reply(reqs[i].msgid, map[string]any{"value": reqs[i].args["key"], "source": "l1", "ttl_ms": 1})
		}
		_, _ = f.read()
	})
	c, err := Connect(ctxT(t), &Options{SocketPath: path})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("k%d", i)
			e, err := c.CacheGet(ctxT(t), CacheGetRequest{Key: key})
			if err != nil || e == nil || e.Value != key {
				t.Errorf("%s: %+v %v", key, e, err)
			}
		}()
	}
	wg.Wait()
}

// TestFakeMsgidWrap: msgids wrap around past the uint32 maximum and skip the ones in
// flight.
func TestFakeMsgidWrap(t *testing.T) {
	seen := make(chan uint32, 10)
	path := fakeSidecar(t, func(f *fakeConn) {
		for {
			r, err := f.read()
			if err != nil {
				return
			}
			seen <- r.msgid
			f.reply(r.msgid, "pong")
		}
	})
	c, err := Connect(ctxT(t), &Options{SocketPath: path})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cn := c.cur
	busy := &pendingCall{ch: make(chan reply, 1)}
	cn.mu.Lock()
	cn.nextID = 0xFFFFFFFF - 2
	cn.pending[0] = busy // a call still in flight with msgid 0
	cn.mu.Unlock()
	for i := 0; i < 4; i++ {
		if _, err := c.Ping(ctxT(t)); err != nil {
			t.Fatal(err)
		}
	}
	want := []uint32{0xFFFFFFFE, 0xFFFFFFFF, 1, 2}
	for _, w := range want {
		if got := <-seen; got != w {
			t.Fatalf("msgid %d, want %d", got, w)
		}
	}
}

// TestFakeFrameLimit: a frame header over the limit closes the connection without
// reading the body; pending calls fail with a protocol error.
func TestFakeFrameLimit(t *testing.T) {
	path := fakeSidecar(t, func(f *fakeConn) {
		r, err := f.read()
		if err != nil {
			return
		}
		_ = r
		// A header announcing 3 GiB, and no body at all.
		_, _ = f.nc.Write([]byte{0xc0, 0, 0, 0})
		_, _ = f.read() // until the client closes
	})
	c, err := Connect(ctxT(t), &Options{SocketPath: path, DisableReconnect: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = c.Ping(ctxT(t))
	var fe *FrameTooLargeError
	if !errors.Is(err, ErrProtocol) || !errors.Is(err, ErrFrameTooLarge) || !errors.As(err, &fe) || fe.Size != 0xc0000000 {
		t.Fatalf("ping: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("slow")
	}
	if _, err := c.Ping(context.Background()); !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("after: %v", err)
	}
}
