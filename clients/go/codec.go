package madsidecar

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"reflect"
	"strings"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// Map is a MessagePack map whose keys are not all str, kept as its entries in wire
// order (an int, bin or array key is not always a usable Go map key). It encodes back
// as a map with the same entries in the same order. A map whose keys are all str
// decodes to map[string]any instead.
type Map []MapEntry

// MapEntry is one key/value pair of a Map.
type MapEntry struct {
	Key   any
	Value any
}

// EncodeMsgpack writes m as a MessagePack map.
func (m Map) EncodeMsgpack(enc *msgpack.Encoder) error {
	if err := enc.EncodeMapLen(len(m)); err != nil {
		return err
	}
	for _, e := range m {
		if err := enc.Encode(e.Key); err != nil {
			return err
		}
		if err := enc.Encode(e.Value); err != nil {
			return err
		}
	}
	return nil
}

// Ext is a MessagePack ext value (the timestamp type -1 included), kept as raw bytes so
// that it round-trips exactly.
type Ext struct {
	Type int8
	Data []byte
}

// EncodeMsgpack writes e as a MessagePack ext value.
func (e Ext) EncodeMsgpack(enc *msgpack.Encoder) error {
	if err := enc.EncodeExtHeader(e.Type, len(e.Data)); err != nil {
		return err
	}
	_, err := enc.Writer().Write(e.Data)
	return err
}

// ---------------------------------------------------------------------------------------
// Encoding requests.

type encBuf struct {
	buf bytes.Buffer
	enc *msgpack.Encoder
}

var encPool = sync.Pool{New: func() any {
	b := &encBuf{}
	b.enc = msgpack.NewEncoder(&b.buf)
	return b
}}

func getEncBuf() *encBuf {
	b := encPool.Get().(*encBuf)
	b.buf.Reset()
	b.enc.Reset(&b.buf)
	// Integers in their shortest form and map keys sorted: the bytes Python's msgpack
	// writes for the same values (and what the conformance vectors hold).
	b.enc.UseCompactInts(true)
	b.enc.SetSortMapKeys(true)
	return b
}

func putEncBuf(b *encBuf) {
	if b.buf.Cap() <= 1<<20 {
		encPool.Put(b)
	}
}

// appendRequest appends the frame of the request [0, msgid, method, params] to b.
// params is [] when args is nil (or an empty map), else [args].
func (b *encBuf) appendRequest(msgid uint32, method string, args any) error {
	start := b.buf.Len()
	b.buf.Write([]byte{0, 0, 0, 0})
	enc := b.enc
	_ = enc.EncodeArrayLen(4)
	_ = enc.EncodeUint(0)
	_ = enc.EncodeUint(uint64(msgid))
	_ = enc.EncodeString(method)
	if isNoArgs(args) {
		_ = enc.EncodeArrayLen(0)
	} else {
		_ = enc.EncodeArrayLen(1)
		if err := enc.Encode(args); err != nil {
			b.buf.Truncate(start)
			return fmt.Errorf("madsidecar: encoding the arguments of %s: %w", method, err)
		}
	}
	n := b.buf.Len() - start - 4
	binary.BigEndian.PutUint32(b.buf.Bytes()[start:], uint32(n))
	return nil
}

func isNoArgs(args any) bool {
	switch a := args.(type) {
	case nil:
		return true
	case map[string]any:
		return len(a) == 0
	}
	return false
}

// EncodeRequest returns the whole frame (length prefix included) of one request, as the
// client sends it. args is a typed request struct, a map[string]any, or nil.
func EncodeRequest(msgid uint32, method string, args any) ([]byte, error) {
	b := getEncBuf()
	defer putEncBuf(b)
	if err := b.appendRequest(msgid, method, args); err != nil {
		return nil, err
	}
	return bytes.Clone(b.buf.Bytes()), nil
}

// ---------------------------------------------------------------------------------------
// Decoding messages.

// message is one decoded frame from the sidecar: a response or a notification.
type message struct {
	kind   int // 1 response, 2 notification
	msgid  uint64
	body   []byte // the frame body
	errOff int    // responses: offset of the error element in body
	name   string // notifications
	params any    // notifications: the decoded params array
}

var decPool = sync.Pool{New: func() any { return &decoder{} }}

type decoder struct {
	r bytes.Reader
	d *msgpack.Decoder
}

func getDecoder(b []byte) *decoder {
	d := decPool.Get().(*decoder)
	d.r.Reset(b)
	if d.d == nil {
		d.d = msgpack.NewDecoder(&d.r)
	} else {
		d.d.Reset(&d.r)
	}
	return d
}

func putDecoder(d *decoder) {
	d.r.Reset(nil)
	decPool.Put(d)
}

// parseMessage reads the envelope of a frame body. For a response it decodes only the
// msgid; the caller decodes error and result.
func parseMessage(body []byte) (message, error) {
	d := getDecoder(body)
	defer putDecoder(d)
	n, err := d.d.DecodeArrayLen()
	if err != nil {
		return message{}, protocolErrorf("unreadable message from the sidecar: %v", err)
	}
	kind, err := d.d.DecodeInt64()
	if err != nil {
		return message{}, protocolErrorf("unreadable message type: %v", err)
	}
	switch {
	case kind == 1 && n == 4:
		c, err := d.d.PeekCode()
		if err != nil || !isIntCode(c) {
			return message{}, protocolErrorf("response msgid is not an integer")
		}
		msgid, err := d.d.DecodeUint64()
		if err != nil {
			return message{}, protocolErrorf("unreadable response msgid: %v", err)
		}
		return message{kind: 1, msgid: msgid, body: body, errOff: len(body) - d.r.Len()}, nil
	case kind == 2 && n == 3:
		name, err := d.d.DecodeString()
		if err != nil {
			return message{}, protocolErrorf("unreadable notification name: %v", err)
		}
		params, err := decodeValue(d.d)
		if err != nil {
			return message{}, protocolErrorf("unreadable notification %q: %v", name, err)
		}
		return message{kind: 2, name: name, params: params}, nil
	}
	return message{}, protocolErrorf("unexpected message from the sidecar (type %d, %d elements)", kind, n)
}

// responseParts decodes the error and result of a response message.
func (m *message) responseParts() (errMap any, result any, err error) {
	d := getDecoder(m.body[m.errOff:])
	defer putDecoder(d)
	if errMap, err = decodeValue(d.d); err != nil {
		return nil, nil, protocolErrorf("unreadable error in response %d: %v", m.msgid, err)
	}
	if result, err = decodeValue(d.d); err != nil {
		return nil, nil, protocolErrorf("unreadable result in response %d: %v", m.msgid, err)
	}
	return errMap, result, nil
}

// DecodeValue decodes one MessagePack value without loss: nil, bool, int64 (uint64 for
// an unsigned integer over math.MaxInt64), float64 (a float32 is widened), string,
// []byte (bin), []any, map[string]any (a map whose keys are all str), Map (any other
// map) and Ext.
func DecodeValue(b []byte) (any, error) {
	d := getDecoder(b)
	defer putDecoder(d)
	return decodeValue(d.d)
}

func isIntCode(c byte) bool {
	return msgpcode.IsFixedNum(c) || (c >= msgpcode.Uint8 && c <= msgpcode.Int64)
}

func decodeValue(d *msgpack.Decoder) (any, error) {
	c, err := d.PeekCode()
	if err != nil {
		return nil, err
	}
	switch {
	case msgpcode.IsFixedNum(c):
		return d.DecodeInt64()
	case msgpcode.IsFixedString(c), c == msgpcode.Str8, c == msgpcode.Str16, c == msgpcode.Str32:
		return d.DecodeString()
	case msgpcode.IsFixedArray(c), c == msgpcode.Array16, c == msgpcode.Array32:
		n, err := d.DecodeArrayLen()
		if err != nil {
			return nil, err
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = decodeValue(d); err != nil {
				return nil, err
			}
		}
		return out, nil
	case msgpcode.IsFixedMap(c), c == msgpcode.Map16, c == msgpcode.Map32:
		return decodeMap(d)
	}
	switch c {
	case msgpcode.Nil:
		return nil, d.DecodeNil()
	case msgpcode.False, msgpcode.True:
		return d.DecodeBool()
	case msgpcode.Float:
		f, err := d.DecodeFloat32()
		return float64(f), err
	case msgpcode.Double:
		return d.DecodeFloat64()
	case msgpcode.Uint64:
		u, err := d.DecodeUint64()
		if err != nil {
			return nil, err
		}
		if u > math.MaxInt64 {
			return u, nil
		}
		return int64(u), nil
	case msgpcode.Uint8, msgpcode.Uint16, msgpcode.Uint32,
		msgpcode.Int8, msgpcode.Int16, msgpcode.Int32, msgpcode.Int64:
		return d.DecodeInt64()
	case msgpcode.Bin8, msgpcode.Bin16, msgpcode.Bin32:
		b, err := d.DecodeBytes()
		if b == nil && err == nil {
			b = []byte{}
		}
		return b, err
	case msgpcode.FixExt1, msgpcode.FixExt2, msgpcode.FixExt4, msgpcode.FixExt8, msgpcode.FixExt16,
		msgpcode.Ext8, msgpcode.Ext16, msgpcode.Ext32:
		typ, n, err := d.DecodeExtHeader()
		if err != nil {
			return nil, err
		}
		data := make([]byte, n)
		if err := d.ReadFull(data); err != nil {
			return nil, err
		}
		return Ext{Type: typ, Data: data}, nil
	}
	return nil, fmt.Errorf("invalid MessagePack code 0x%02x", c)
}

func decodeMap(d *msgpack.Decoder) (any, error) {
	n, err := d.DecodeMapLen()
	if err != nil {
		return nil, err
	}
	var entries Map // set once a key is not a str: from then on every entry, in order
	m := make(map[string]any, n)
	order := make([]string, 0, n)
	for i := 0; i < n; i++ {
		k, err := decodeValue(d)
		if err != nil {
			return nil, err
		}
		v, err := decodeValue(d)
		if err != nil {
			return nil, err
		}
		if entries == nil {
			if ks, ok := k.(string); ok {
				m[ks] = v
				order = append(order, ks)
				continue
			}
			entries = make(Map, 0, n)
			for _, ks := range order {
				entries = append(entries, MapEntry{Key: ks, Value: m[ks]})
			}
		}
		entries = append(entries, MapEntry{Key: k, Value: v})
	}
	if entries != nil {
		return entries, nil
	}
	return m, nil
}

// ---------------------------------------------------------------------------------------
// From decoded values to typed results.

type fieldInfo struct {
	name  string
	index int
}

var fieldCache sync.Map // reflect.Type -> map[string]fieldInfo

func structFields(t reflect.Type) map[string]fieldInfo {
	if f, ok := fieldCache.Load(t); ok {
		return f.(map[string]fieldInfo)
	}
	fields := make(map[string]fieldInfo, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		tag := sf.Tag.Get("msgpack")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		fields[name] = fieldInfo{name: name, index: i}
	}
	fieldCache.Store(t, fields)
	return fields
}

// Decode stores a value decoded by DecodeValue (or returned by Client.Call) into out,
// a pointer to a typed result: a struct (fields matched by their msgpack tag, unknown
// fields ignored), a slice, a map with str keys, a pointer (left nil for nil), string,
// bool, an integer or float type, []byte, or any.
func Decode(value any, out any) error {
	rv := reflect.ValueOf(out)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("madsidecar: Decode needs a non-nil pointer, got %T", out)
	}
	return assign(rv.Elem(), value, "result")
}

func assign(dst reflect.Value, src any, path string) error {
	if dst.Kind() == reflect.Interface {
		if src == nil {
			dst.SetZero()
		} else {
			dst.Set(reflect.ValueOf(src))
		}
		return nil
	}
	if src == nil {
		dst.SetZero()
		return nil
	}
	switch dst.Kind() {
	case reflect.Pointer:
		v := reflect.New(dst.Type().Elem())
		if err := assign(v.Elem(), src, path); err != nil {
			return err
		}
		dst.Set(v)
		return nil
	case reflect.String:
		if s, ok := src.(string); ok {
			dst.SetString(s)
			return nil
		}
	case reflect.Bool:
		if b, ok := src.(bool); ok {
			dst.SetBool(b)
			return nil
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		switch n := src.(type) {
		case int64:
			if !dst.OverflowInt(n) {
				dst.SetInt(n)
				return nil
			}
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		switch n := src.(type) {
		case int64:
			if n >= 0 && !dst.OverflowUint(uint64(n)) {
				dst.SetUint(uint64(n))
				return nil
			}
		case uint64:
			if !dst.OverflowUint(n) {
				dst.SetUint(n)
				return nil
			}
		}
	case reflect.Float32, reflect.Float64:
		switch n := src.(type) {
		case float64:
			dst.SetFloat(n)
			return nil
		case int64:
			dst.SetFloat(float64(n))
			return nil
		}
	case reflect.Slice:
		if dst.Type().Elem().Kind() == reflect.Uint8 {
			if b, ok := src.([]byte); ok {
				dst.SetBytes(b)
				return nil
			}
			break
		}
		if a, ok := src.([]any); ok {
			s := reflect.MakeSlice(dst.Type(), len(a), len(a))
			for i, item := range a {
				if err := assign(s.Index(i), item, fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
			dst.Set(s)
			return nil
		}
	case reflect.Map:
		if m, ok := src.(map[string]any); ok && dst.Type().Key().Kind() == reflect.String {
			out := reflect.MakeMapWithSize(dst.Type(), len(m))
			for k, v := range m {
				ev := reflect.New(dst.Type().Elem()).Elem()
				if err := assign(ev, v, path+"."+k); err != nil {
					return err
				}
				out.SetMapIndex(reflect.ValueOf(k).Convert(dst.Type().Key()), ev)
			}
			dst.Set(out)
			return nil
		}
	case reflect.Struct:
		if m, ok := src.(map[string]any); ok {
			fields := structFields(dst.Type())
			for k, v := range m {
				f, ok := fields[k]
				if !ok {
					continue // a field this SDK does not know: ignored
				}
				if err := assign(dst.Field(f.index), v, path+"."+k); err != nil {
					return err
				}
			}
			return nil
		}
	}
	return protocolErrorf("%s: cannot store %T in %s", path, src, dst.Type())
}
