package madsidecar

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// The conformance vectors made by the Python protocol module.
const vectorsPath = "../../tests/vectors/protocol-v1.json"
const methodsPath = "../../tests/vectors/methods.json"

// requestTypes: the typed request of every method (nil: no arguments).
var requestTypes = map[string]reflect.Type{
	"hello":                reflect.TypeFor[HelloRequest](),
	"ping":                 nil,
	"stats":                nil,
	"health":               nil,
	"cache.get":            reflect.TypeFor[CacheGetRequest](),
	"cache.mget":           reflect.TypeFor[CacheMGetRequest](),
	"cache.set":            reflect.TypeFor[CacheSetRequest](),
	"cache.delete":         reflect.TypeFor[CacheDeleteRequest](),
	"cache.invalidate":     reflect.TypeFor[CacheInvalidateRequest](),
	"cache.fetch":          reflect.TypeFor[CacheFetchRequest](),
	"cache.fill":           reflect.TypeFor[CacheFillRequest](),
	"cache.warm":           reflect.TypeFor[CacheWarmRequest](),
	"lock.acquire":         reflect.TypeFor[LockAcquireRequest](),
	"lock.release":         reflect.TypeFor[LockReleaseRequest](),
	"lock.extend":          reflect.TypeFor[LockExtendRequest](),
	"lock.inspect":         reflect.TypeFor[LockInspectRequest](),
	"session.create":       reflect.TypeFor[SessionCreateRequest](),
	"session.get":          reflect.TypeFor[SessionGetRequest](),
	"session.update":       reflect.TypeFor[SessionUpdateRequest](),
	"session.rotate":       reflect.TypeFor[SessionRotateRequest](),
	"session.revoke":       reflect.TypeFor[SessionRevokeRequest](),
	"session.revoke_user":  reflect.TypeFor[SessionRevokeUserRequest](),
	"session.list":         reflect.TypeFor[SessionListRequest](),
	"presence.track":       reflect.TypeFor[PresenceTrackRequest](),
	"presence.update":      reflect.TypeFor[PresenceUpdateRequest](),
	"presence.untrack":     reflect.TypeFor[PresenceUntrackRequest](),
	"presence.list":        reflect.TypeFor[PresenceListRequest](),
	"presence.count":       reflect.TypeFor[PresenceCountRequest](),
	"presence.subscribe":   reflect.TypeFor[PresenceSubscribeRequest](),
	"presence.unsubscribe": reflect.TypeFor[PresenceUnsubscribeRequest](),
	"pubsub.publish":       reflect.TypeFor[PubSubPublishRequest](),
	"pubsub.subscribe":     reflect.TypeFor[PubSubSubscribeRequest](),
	"pubsub.unsubscribe":   reflect.TypeFor[PubSubUnsubscribeRequest](),
	"ratelimit.hit":        reflect.TypeFor[RateLimitHitRequest](),
	"ratelimit.hit_many":   reflect.TypeFor[RateLimitHitManyRequest](),
	"ratelimit.peek":       reflect.TypeFor[RateLimitPeekRequest](),
	"ratelimit.reset":      reflect.TypeFor[RateLimitResetRequest](),
}

// resultTypes: the typed result of every method, as its Client method returns it.
var resultTypes = map[string]reflect.Type{
	"hello":                reflect.TypeFor[HelloResult](),
	"ping":                 reflect.TypeFor[string](),
	"stats":                reflect.TypeFor[StatsResult](),
	"health":               reflect.TypeFor[HealthResult](),
	"cache.get":            reflect.TypeFor[*CacheEntry](),
	"cache.mget":           reflect.TypeFor[[]*CacheEntry](),
	"cache.set":            reflect.TypeFor[OKResult](),
	"cache.delete":         reflect.TypeFor[DeletedResult](),
	"cache.invalidate":     reflect.TypeFor[DeletedResult](),
	"cache.fetch":          reflect.TypeFor[CacheFetchResult](),
	"cache.fill":           reflect.TypeFor[OKResult](),
	"cache.warm":           reflect.TypeFor[CacheWarmResult](),
	"lock.acquire":         reflect.TypeFor[LockAcquireResult](),
	"lock.release":         reflect.TypeFor[LockReleaseResult](),
	"lock.extend":          reflect.TypeFor[LockExtendResult](),
	"lock.inspect":         reflect.TypeFor[LockInspectResult](),
	"session.create":       reflect.TypeFor[SessionCreateResult](),
	"session.get":          reflect.TypeFor[*Session](),
	"session.update":       reflect.TypeFor[SessionUpdateResult](),
	"session.rotate":       reflect.TypeFor[*SessionRotateResult](),
	"session.revoke":       reflect.TypeFor[SessionRevokeResult](),
	"session.revoke_user":  reflect.TypeFor[SessionRevokeUserResult](),
	"session.list":         reflect.TypeFor[[]SessionInfo](),
	"presence.track":       reflect.TypeFor[PresenceTrackResult](),
	"presence.update":      reflect.TypeFor[PresenceUpdateResult](),
	"presence.untrack":     reflect.TypeFor[PresenceUntrackResult](),
	"presence.list":        reflect.TypeFor[PresenceListResult](),
	"presence.count":       reflect.TypeFor[PresenceCountResult](),
	"presence.subscribe":   reflect.TypeFor[PresenceSubscribeResult](),
	"presence.unsubscribe": reflect.TypeFor[OKResult](),
	"pubsub.publish":       reflect.TypeFor[PubSubPublishResult](),
	"pubsub.subscribe":     reflect.TypeFor[OKResult](),
	"pubsub.unsubscribe":   reflect.TypeFor[OKResult](),
	"ratelimit.hit":        reflect.TypeFor[RateLimitResult](),
	"ratelimit.hit_many":   reflect.TypeFor[RateLimitHitManyResult](),
	"ratelimit.peek":       reflect.TypeFor[RateLimitResult](),
	"ratelimit.reset":      reflect.TypeFor[OKResult](),
}

var sentinelByCode = map[string]error{
	CodeBadFrame: ErrBadFrame, CodeFrameTooLarge: ErrFrameTooLarge, CodeBadRequest: ErrBadRequest,
	CodeUnknownMethod: ErrUnknownMethod, CodeForbidden: ErrForbidden, CodeUnavailable: ErrUnavailable,
	CodeNotHeld: ErrNotHeld, CodeTimeout: ErrServerTimeout, CodeShuttingDown: ErrShuttingDown,
	CodeInternal: ErrInternal,
}

type vectorFile struct {
	Requests []struct {
		Name   string          `json:"name"`
		Method string          `json:"method"`
		MsgID  uint32          `json:"msgid"`
		Args   json.RawMessage `json:"args"`
		Frame  string          `json:"frame"`
	} `json:"requests"`
	Responses []struct {
		Name   string          `json:"name"`
		Method string          `json:"method"`
		MsgID  uint64          `json:"msgid"`
		Result json.RawMessage `json:"result"`
		Error  json.RawMessage `json:"error"`
		Frame  string          `json:"frame"`
	} `json:"responses"`
	Notifications []struct {
		Name         string          `json:"name"`
		Notification string          `json:"notification"`
		Payload      json.RawMessage `json:"payload"`
		Frame        string          `json:"frame"`
	} `json:"notifications"`
}

func loadVectors(t *testing.T) vectorFile {
	t.Helper()
	data, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatalf("reading the conformance vectors: %v", err)
	}
	var v vectorFile
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// tagged turns the vectors' tagged JSON into the values this SDK decodes to.
func tagged(t *testing.T, raw json.RawMessage) any {
	t.Helper()
	if len(raw) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return fromTagged(t, v)
}

func fromTagged(t *testing.T, v any) any {
	switch x := v.(type) {
	case json.Number:
		n, err := x.Int64()
		if err != nil {
			t.Fatalf("a plain JSON number that is not an int: %s", x)
		}
		return n
	case []any:
		out := make([]any, len(x))
		for i := range x {
			out[i] = fromTagged(t, x[i])
		}
		return out
	case map[string]any:
		if len(x) == 1 {
			for k, inner := range x {
				switch k {
				case "$int":
					b, ok := new(big.Int).SetString(inner.(string), 10)
					if !ok {
						t.Fatalf("bad $int %v", inner)
					}
					if b.IsInt64() {
						return b.Int64()
					}
					return b.Uint64()
				case "$float":
					f, err := inner.(json.Number).Float64()
					if err != nil {
						t.Fatal(err)
					}
					return f
				case "$bin":
					b, err := hex.DecodeString(inner.(string))
					if err != nil {
						t.Fatal(err)
					}
					return b
				case "$map":
					var m Map
					for _, pair := range inner.([]any) {
						p := pair.([]any)
						m = append(m, MapEntry{Key: fromTagged(t, p[0]), Value: fromTagged(t, p[1])})
					}
					return m
				}
			}
		}
		out := make(map[string]any, len(x))
		for k, inner := range x {
			out[k] = fromTagged(t, inner)
		}
		return out
	}
	return v
}

func frameBody(t *testing.T, frameHex string) []byte {
	t.Helper()
	frame, err := hex.DecodeString(frameHex)
	if err != nil {
		t.Fatal(err)
	}
	if len(frame) < 5 || int(binary.BigEndian.Uint32(frame)) != len(frame)-4 {
		t.Fatalf("bad frame length prefix in %s", frameHex)
	}
	return frame[4:]
}

// TestVectorMethodsCovered: every method the sidecar serves has a typed request, a
// typed result and a Client method, and every argument a request field.
func TestVectorMethodsCovered(t *testing.T) {
	data, err := os.ReadFile(methodsPath)
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		Methods []struct {
			Name string `json:"name"`
			Args []struct {
				Name string `json:"name"`
			} `json:"args"`
		} `json:"methods"`
	}
	if err := json.Unmarshal(data, &spec); err != nil {
		t.Fatal(err)
	}
	client := reflect.TypeFor[*Client]()
	for _, m := range spec.Methods {
		reqType, ok := requestTypes[m.Name]
		if !ok {
			t.Errorf("%s: no typed request", m.Name)
			continue
		}
		if _, ok := resultTypes[m.Name]; !ok {
			t.Errorf("%s: no typed result", m.Name)
		}
		goName := goMethodName(m.Name)
		if _, ok := client.MethodByName(goName); !ok {
			t.Errorf("%s: no method Client.%s", m.Name, goName)
		}
		if reqType == nil {
			if len(m.Args) != 0 {
				t.Errorf("%s takes arguments", m.Name)
			}
			continue
		}
		// Fields in the canonical argument order.
		var names []string
		for i := 0; i < reqType.NumField(); i++ {
			name, _, _ := strings.Cut(reqType.Field(i).Tag.Get("msgpack"), ",")
			names = append(names, name)
		}
		var want []string
		for _, a := range m.Args {
			want = append(want, a.Name)
		}
		if !reflect.DeepEqual(names, want) {
			t.Errorf("%s: request fields %v, want the canonical order %v", m.Name, names, want)
		}
	}
}

func goMethodName(method string) string {
	special := map[string]string{"mget": "MGet", "pubsub": "PubSub", "ratelimit": "RateLimit",
		"revoke_user": "RevokeUser", "hit_many": "HitMany"}
	var b strings.Builder
	for _, part := range strings.Split(method, ".") {
		if s, ok := special[part]; ok {
			b.WriteString(s)
			continue
		}
		b.WriteString(strings.ToUpper(part[:1]) + part[1:])
	}
	return b.String()
}

// TestVectorRequests: each request built as its typed struct and encoded by the
// client's encoder is byte for byte the vector's frame.
func TestVectorRequests(t *testing.T) {
	v := loadVectors(t)
	if len(v.Requests) == 0 {
		t.Fatal("no request vectors")
	}
	for _, r := range v.Requests {
		t.Run(r.Name, func(t *testing.T) {
			reqType, ok := requestTypes[r.Method]
			if !ok {
				t.Fatalf("no typed request for %s", r.Method)
			}
			var args any
			if reqType != nil {
				argMap, _ := tagged(t, r.Args).(map[string]any)
				fields := structFields(reqType)
				for k := range argMap {
					if _, ok := fields[k]; !ok {
						t.Fatalf("%s has no field for argument %q", reqType, k)
					}
				}
				req := reflect.New(reqType)
				if err := Decode(argMap, req.Interface()); err != nil {
					t.Fatal(err)
				}
				args = req.Elem().Interface()
			} else if len(r.Args) > 0 {
				t.Fatalf("%s takes no arguments", r.Method)
			}
			frame, err := EncodeRequest(r.MsgID, r.Method, args)
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(frame); got != r.Frame {
				t.Fatalf("frame\n got %s\nwant %s", got, r.Frame)
			}
		})
	}
}

// TestVectorResponses: each response frame decodes, through the client's decoder, to
// the typed result (or error) of its method, without loss.
func TestVectorResponses(t *testing.T) {
	v := loadVectors(t)
	if len(v.Responses) == 0 {
		t.Fatal("no response vectors")
	}
	for _, r := range v.Responses {
		t.Run(r.Name, func(t *testing.T) {
			msg, err := parseMessage(frameBody(t, r.Frame))
			if err != nil {
				t.Fatal(err)
			}
			if msg.kind != 1 || msg.msgid != r.MsgID {
				t.Fatalf("kind %d msgid %d, want a response to %d", msg.kind, msg.msgid, r.MsgID)
			}
			// The lossless generic decoding (what Client.Call returns).
			errTree, resTree, err := msg.responseParts()
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Error) > 0 {
				wantErr := tagged(t, r.Error).(map[string]any)
				if !reflect.DeepEqual(errTree, wantErr) {
					t.Fatalf("error map %#v, want %#v", errTree, wantErr)
				}
				checkServerError(t, msg, wantErr)
				return
			}
			want := tagged(t, r.Result)
			if !reflect.DeepEqual(resTree, want) {
				t.Fatalf("generic result\n got %#v\nwant %#v", resTree, want)
			}
			if errTree != nil {
				t.Fatalf("error %v on a success", errTree)
			}
			// The typed result.
			typ, ok := resultTypes[r.Method]
			if !ok {
				t.Fatalf("no typed result for %s", r.Method)
			}
			out := reflect.New(typ)
			if err := msg.into(out.Interface()); err != nil {
				t.Fatal(err)
			}
			var unknown []string
			checkTyped(t, "result", out.Elem(), want, &unknown)
			if len(unknown) > 0 && !strings.Contains(r.Name, "unknown fields") {
				t.Errorf("fields with no typed field: %v", unknown)
			}
		})
	}
}

func checkServerError(t *testing.T, msg message, want map[string]any) {
	t.Helper()
	err := msg.into(new(any))
	var se *ServerError
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T), want a *ServerError", err, err)
	}
	if se.Code != want["code"] || se.Message != want["message"] || !reflect.DeepEqual(se.Fields, want) {
		t.Fatalf("ServerError %+v, want %v", se, want)
	}
	if !errors.Is(err, ErrServer) {
		t.Error("not errors.Is(err, ErrServer)")
	}
	sentinel, known := sentinelByCode[se.Code]
	if known {
		if !errors.Is(err, sentinel) {
			t.Errorf("not errors.Is(err, the %s sentinel)", se.Code)
		}
		if errors.Is(err, ErrUnknownCode) {
			t.Error("a known code matches ErrUnknownCode")
		}
	} else if !errors.Is(err, ErrUnknownCode) {
		t.Error("an unknown code does not match ErrUnknownCode")
	}
	for code, other := range sentinelByCode {
		if code != se.Code && errors.Is(err, other) {
			t.Errorf("%s matches the %s sentinel", se.Code, code)
		}
	}
	switch se.Code {
	case CodeBadRequest:
		if se.Argument() != want["argument"] {
			t.Errorf("Argument() %q", se.Argument())
		}
	case CodeUnavailable:
		if se.RetryAfterMs() != want["retry_after_ms"] {
			t.Errorf("RetryAfterMs() %d", se.RetryAfterMs())
		}
	case CodeInternal:
		if se.ErrorID() != want["error_id"] {
			t.Errorf("ErrorID() %q", se.ErrorID())
		}
	}
}

// checkTyped compares a typed value with the expected (tagged JSON) value: every
// expected field must be in the typed value, equal, and every typed field the vector
// does not give must be zero. Expected fields the type does not have go to unknown.
func checkTyped(t *testing.T, path string, got reflect.Value, want any, unknown *[]string) {
	t.Helper()
	switch got.Kind() {
	case reflect.Pointer:
		if want == nil {
			if !got.IsNil() {
				t.Errorf("%s: got %v, want nil", path, got.Interface())
			}
			return
		}
		if got.IsNil() {
			t.Errorf("%s: got nil, want %#v", path, want)
			return
		}
		checkTyped(t, path, got.Elem(), want, unknown)
	case reflect.Interface:
		if !reflect.DeepEqual(got.Interface(), want) {
			t.Errorf("%s: got %#v, want %#v", path, got.Interface(), want)
		}
	case reflect.Struct:
		m, ok := want.(map[string]any)
		if !ok {
			t.Errorf("%s: want %#v for a %s", path, want, got.Type())
			return
		}
		fields := structFields(got.Type())
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			f, ok := fields[k]
			if !ok {
				*unknown = append(*unknown, path+"."+k)
				continue
			}
			checkTyped(t, path+"."+k, got.Field(f.index), m[k], unknown)
		}
		for name, f := range fields {
			if _, given := m[name]; !given && !got.Field(f.index).IsZero() {
				t.Errorf("%s.%s: %v, but the vector has no such field", path, name, got.Field(f.index).Interface())
			}
		}
	case reflect.Slice:
		if got.Type().Elem().Kind() == reflect.Uint8 {
			if !reflect.DeepEqual(got.Interface(), want) {
				t.Errorf("%s: got %#v, want %#v", path, got.Interface(), want)
			}
			return
		}
		a, ok := want.([]any)
		if !ok || len(a) != got.Len() {
			t.Errorf("%s: got %d items, want %#v", path, got.Len(), want)
			return
		}
		for i := range a {
			checkTyped(t, fmt.Sprintf("%s[%d]", path, i), got.Index(i), a[i], unknown)
		}
	case reflect.Map:
		m, ok := want.(map[string]any)
		if !ok || len(m) != got.Len() {
			t.Errorf("%s: got %d entries, want %#v", path, got.Len(), want)
			return
		}
		for k, wv := range m {
			gv := got.MapIndex(reflect.ValueOf(k))
			if !gv.IsValid() {
				t.Errorf("%s: no key %q", path, k)
				continue
			}
			checkTyped(t, path+"."+k, gv, wv, unknown)
		}
	case reflect.Int64:
		if w, ok := want.(int64); !ok || got.Int() != w {
			t.Errorf("%s: got %d, want %#v", path, got.Int(), want)
		}
	case reflect.String:
		if w, ok := want.(string); !ok || got.String() != w {
			t.Errorf("%s: got %q, want %#v", path, got.String(), want)
		}
	case reflect.Bool:
		if w, ok := want.(bool); !ok || got.Bool() != w {
			t.Errorf("%s: got %v, want %#v", path, got.Bool(), want)
		}
	default:
		t.Errorf("%s: unexpected kind %s", path, got.Kind())
	}
}

var notificationTypes = map[string]reflect.Type{
	NotifyLockLost:      reflect.TypeFor[*LockLost](),
	NotifyPresenceDiff:  reflect.TypeFor[*PresenceDiff](),
	NotifyPresenceState: reflect.TypeFor[*PresenceState](),
	NotifyPubSubMessage: reflect.TypeFor[*PubSubMessage](),
	NotifyPubSubDropped: reflect.TypeFor[*PubSubDropped](),
	NotifyShutdown:      reflect.TypeFor[*Shutdown](),
	NotifyError:         reflect.TypeFor[*ServerError](),
}

// TestVectorNotifications: each notification frame decodes, through the client's
// decoder, to its typed payload; an unknown name is delivered untyped, not an error.
func TestVectorNotifications(t *testing.T) {
	v := loadVectors(t)
	if len(v.Notifications) == 0 {
		t.Fatal("no notification vectors")
	}
	for _, r := range v.Notifications {
		t.Run(r.Name, func(t *testing.T) {
			msg, err := parseMessage(frameBody(t, r.Frame))
			if err != nil {
				t.Fatal(err)
			}
			if msg.kind != 2 || msg.name != r.Notification {
				t.Fatalf("kind %d name %q", msg.kind, msg.name)
			}
			n := decodeNotification(msg.name, msg.params)
			want := tagged(t, r.Payload).(map[string]any)
			if n.Name != r.Notification || !reflect.DeepEqual(n.Raw, want) {
				t.Fatalf("notification %q raw %#v, want %#v", n.Name, n.Raw, want)
			}
			typ, known := notificationTypes[r.Notification]
			if !known {
				if n.Payload != nil {
					t.Fatalf("unknown notification typed as %T", n.Payload)
				}
				return
			}
			if reflect.TypeOf(n.Payload) != typ {
				t.Fatalf("payload %T, want %s", n.Payload, typ)
			}
			if se, ok := n.Payload.(*ServerError); ok {
				if se.Code != want["code"] || se.Message != want["message"] || !errors.Is(se, sentinelByCode[se.Code]) {
					t.Fatalf("error payload %+v", se)
				}
				return
			}
			var unknown []string
			checkTyped(t, "payload", reflect.ValueOf(n.Payload), want, &unknown)
			if len(unknown) > 0 {
				t.Errorf("fields with no typed field: %v", unknown)
			}
		})
	}
}

// TestValueRoundTrip: every kind of value decodes and encodes back to the same bytes.
func TestValueRoundTrip(t *testing.T) {
	v := loadVectors(t)
	for _, r := range v.Requests {
		if !strings.HasPrefix(r.Name, "cache.set (value") {
			continue
		}
		body := frameBody(t, r.Frame)
		tree, err := DecodeValue(body)
		if err != nil {
			t.Fatal(err)
		}
		args := tree.([]any)[3].([]any)[0]
		frame, err := EncodeRequest(r.MsgID, r.Method, args)
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(frame) != r.Frame {
			t.Errorf("%s: round trip\n got %x\nwant %s", r.Name, frame, r.Frame)
		}
	}
	ext := []byte{0xd6, 0xff, 1, 2, 3, 4} // a timestamp ext stays ext, byte for byte
	val, err := DecodeValue(ext)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := val.(Ext); !ok || e.Type != -1 || !bytes.Equal(e.Data, []byte{1, 2, 3, 4}) {
		t.Fatalf("ext decoded as %#v", val)
	}
	b := getEncBuf()
	defer putEncBuf(b)
	if err := b.enc.Encode(val); err != nil || !bytes.Equal(b.buf.Bytes(), ext) {
		t.Fatalf("ext encoded as %x (%v)", b.buf.Bytes(), err)
	}
}
