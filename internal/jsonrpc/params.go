package jsonrpc

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"blockcache/internal/excerpt"
)

// DecodeParams decodes a method's params into dst, a non-nil pointer
// (normally to a struct), as strictly as SPDK's spdk_json_decode_object:
//
//   - an unknown member, a member given twice, or a missing required member
//     fails; a member is required when its field is tagged `rpc:"required"`.
//     Names match the `json` tag (or the field name) exactly, case included.
//     Untagged embedded structs are flattened as encoding/json does.
//   - a value of the wrong JSON type fails, and so does null (SPDK has no
//     "null" for any type), except into json.RawMessage or an interface.
//   - integers follow SPDK's spdk_json_number_to_* rules: 1.0 and 1e3 are the
//     integers 1 and 1000, but 1.5, a negative number for an unsigned field
//     (even -0) or a value out of the field's range fail.
//   - strings containing NUL fail, as they cannot be C strings.
//
// These rules apply at every depth (nested structs, slices, maps). Members
// absent from params leave dst's fields untouched, so pre-set fields act as
// defaults. nil params (absent or null in the request) decode as {}.
//
// On failure it returns a copy of onErr, whose code and message the method
// chooses (OCF methods send -32602 "Invalid parameters", most bdev methods
// -32603 "spdk_json_decode_object failed"), with Data naming the offending
// member, e.g. `missing required parameter "name"`. A nil onErr means
// {-32602, "Invalid parameters"}.
func DecodeParams(params json.RawMessage, dst any, onErr *Error) error {
	if onErr == nil {
		onErr = &Error{Code: CodeInvalidParams, Message: MsgInvalidParams}
	}
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("jsonrpc.DecodeParams: destination must be a non-nil pointer, not %T", dst)
	}
	if len(params) == 0 || kindOf(params) == kindNull {
		params = json.RawMessage("{}")
	}
	var err error
	if !json.Valid(params) {
		err = errors.New("params are not valid JSON")
	} else {
		err = decodeValue(params, rv.Elem(), "")
	}
	if err != nil {
		return onErr.WithData("%s", err.Error())
	}
	return nil
}

// paramError says which member failed and why.
type paramError struct {
	path string // "" for params itself, else e.g. "name" or "bdevs[2].uuid"
	msg  string
}

func (e *paramError) Error() string {
	if e.path == "" {
		return "params: " + e.msg
	}
	return "parameter " + excerpt.Quote(e.path) + ": " + e.msg
}

// perrf builds a paramError. Messages quote what failed through literal or
// excerpt.Quote; the cut to maxParamMsg catches errors of other packages
// (an UnmarshalJSON method's, say) that quote more.
func perrf(path, format string, args ...any) error {
	return &paramError{path: path, msg: excerpt.Text(fmt.Sprintf(format, args...), maxParamMsg)}
}

// maxParamMsg bounds what a paramError says about the value.
const maxParamMsg = 256

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var (
	rawMessageType      = reflect.TypeFor[json.RawMessage]()
	jsonUnmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// decodeValue decodes the valid JSON value raw into v, which is settable.
func decodeValue(raw []byte, v reflect.Value, path string) error {
	t := v.Type()
	k := kindOf(raw)
	if t == rawMessageType {
		v.SetBytes(append(json.RawMessage(nil), strings.TrimSpace(string(raw))...))
		return nil
	}
	if k == kindNull {
		if t.Kind() == reflect.Interface {
			v.SetZero()
			return nil
		}
		return perrf(path, "expected %s, got null", describe(t))
	}
	if pt := reflect.PointerTo(t); t.Kind() != reflect.Pointer &&
		(pt.Implements(jsonUnmarshalerType) || pt.Implements(textUnmarshalerType)) {
		if err := json.Unmarshal(raw, v.Addr().Interface()); err != nil {
			return perrf(path, "%v", err)
		}
		return nil
	}

	switch t.Kind() {
	case reflect.Pointer:
		nv := reflect.New(t.Elem())
		if err := decodeValue(raw, nv.Elem(), path); err != nil {
			return err
		}
		v.Set(nv)
		return nil
	case reflect.Interface:
		if t.NumMethod() != 0 {
			return perrf(path, "cannot decode into %s", t)
		}
		var x any
		if err := json.Unmarshal(raw, &x); err != nil {
			return perrf(path, "%v", err)
		}
		v.Set(reflect.ValueOf(x))
		return nil
	case reflect.Struct:
		if k != kindObject {
			return perrf(path, "expected object, got %s", k)
		}
		return decodeStruct(raw, v, path)
	case reflect.Map:
		if k != kindObject {
			return perrf(path, "expected object, got %s", k)
		}
		if t.Key().Kind() != reflect.String {
			return perrf(path, "cannot decode into %s", t)
		}
		m := reflect.MakeMap(t)
		err := objectMembers(raw, func(key string, val json.RawMessage) error {
			kv := reflect.ValueOf(key).Convert(t.Key())
			if m.MapIndex(kv).IsValid() {
				return perrf(join(path, key), "given twice")
			}
			ev := reflect.New(t.Elem()).Elem()
			if err := decodeValue(val, ev, join(path, key)); err != nil {
				return err
			}
			m.SetMapIndex(kv, ev)
			return nil
		})
		if err != nil {
			return err
		}
		v.Set(m)
		return nil
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 && k == kindString { // base64, as encoding/json
			if err := json.Unmarshal(raw, v.Addr().Interface()); err != nil {
				return perrf(path, "%v", err)
			}
			return nil
		}
		if k != kindArray {
			return perrf(path, "expected array, got %s", k)
		}
		s := reflect.MakeSlice(t, 0, 0)
		err := arrayElements(raw, func(i int, val json.RawMessage) error {
			ev := reflect.New(t.Elem()).Elem()
			if err := decodeValue(val, ev, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
			s = reflect.Append(s, ev)
			return nil
		})
		if err != nil {
			return err
		}
		v.Set(s)
		return nil
	case reflect.Array:
		if k != kindArray {
			return perrf(path, "expected array, got %s", k)
		}
		return arrayElements(raw, func(i int, val json.RawMessage) error {
			if i >= v.Len() {
				return perrf(path, "more than %d elements", v.Len())
			}
			return decodeValue(val, v.Index(i), fmt.Sprintf("%s[%d]", path, i))
		})
	case reflect.String:
		var s string
		if k != kindString || json.Unmarshal(raw, &s) != nil {
			return perrf(path, "expected string, got %s", k)
		}
		if strings.IndexByte(s, 0) >= 0 {
			return perrf(path, "string contains a NUL character")
		}
		v.SetString(s)
		return nil
	case reflect.Bool:
		if k != kindBool {
			return perrf(path, "expected boolean, got %s", k)
		}
		v.SetBool(bytes.TrimSpace(raw)[0] == 't')
		return nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if k != kindNumber {
			return perrf(path, "expected integer, got %s", k)
		}
		n, err := numberToInt(strings.TrimSpace(string(raw)), t.Bits())
		if err != nil {
			return perrf(path, "%v", err)
		}
		v.SetInt(n)
		return nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if k != kindNumber {
			return perrf(path, "expected unsigned integer, got %s", k)
		}
		n, err := numberToUint(strings.TrimSpace(string(raw)), t.Bits())
		if err != nil {
			return perrf(path, "%v", err)
		}
		v.SetUint(n)
		return nil
	case reflect.Float32, reflect.Float64:
		if k != kindNumber {
			return perrf(path, "expected number, got %s", k)
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(string(raw)), t.Bits())
		if err != nil {
			return perrf(path, "%s out of range for float%d", literal(strings.TrimSpace(string(raw))), t.Bits())
		}
		v.SetFloat(f)
		return nil
	}
	return perrf(path, "cannot decode into %s", t)
}

// describe names the JSON type a Go type expects, for messages.
func describe(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Pointer:
		return describe(t.Elem())
	case reflect.Struct, reflect.Map:
		return "object"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "unsigned integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	}
	return t.String()
}

func decodeStruct(raw []byte, v reflect.Value, path string) error {
	info := structInfoFor(v.Type())
	if info.err != nil {
		return perrf(path, "%v", info.err)
	}
	seen := make([]bool, len(info.fields))
	err := objectMembers(raw, func(key string, val json.RawMessage) error {
		i, ok := info.byName[key]
		if !ok {
			return perrf(join(path, key), "unknown parameter")
		}
		if seen[i] {
			return perrf(join(path, key), "given twice")
		}
		seen[i] = true
		f := info.fields[i]
		fv, err := fieldByIndex(v, f.index)
		if err != nil {
			return perrf(join(path, key), "%v", err)
		}
		return decodeValue(val, fv, join(path, key))
	})
	if err != nil {
		return err
	}
	for i, f := range info.fields {
		if f.required && !seen[i] {
			return perrf(join(path, f.name), "missing required parameter")
		}
	}
	return nil
}

// fieldByIndex is reflect.Value.FieldByIndex, allocating nil embedded
// struct pointers on the way.
func fieldByIndex(v reflect.Value, index []int) (reflect.Value, error) {
	for n, i := range index {
		if n > 0 && v.Kind() == reflect.Pointer {
			if v.IsNil() {
				if !v.CanSet() {
					return reflect.Value{}, errors.New("cannot set embedded pointer to unexported struct")
				}
				v.Set(reflect.New(v.Type().Elem()))
			}
			v = v.Elem()
		}
		v = v.Field(i)
	}
	return v, nil
}

// structInfo lists the JSON members a struct type accepts.
type structInfo struct {
	fields []fieldInfo
	byName map[string]int
	err    error // the type cannot be decoded (e.g. two fields, one name)
}

type fieldInfo struct {
	name     string
	index    []int
	required bool
}

var structInfos sync.Map // reflect.Type -> *structInfo

func structInfoFor(t reflect.Type) *structInfo {
	if si, ok := structInfos.Load(t); ok {
		return si.(*structInfo)
	}
	si := buildStructInfo(t)
	actual, _ := structInfos.LoadOrStore(t, si)
	return actual.(*structInfo)
}

// buildStructInfo collects fields breadth-first through untagged embedded
// structs; a shallower field hides deeper ones of the same name, two at the
// same depth are an error.
func buildStructInfo(t reflect.Type) *structInfo {
	si := &structInfo{byName: map[string]int{}}
	type level struct {
		t     reflect.Type
		index []int
	}
	current := []level{{t: t}}
	visited := map[reflect.Type]bool{}
	for len(current) > 0 {
		var next []level
		depthNames := map[string]int{} // name -> count at this depth
		var found []fieldInfo
		for _, lv := range current {
			if visited[lv.t] {
				continue
			}
			visited[lv.t] = true
			for i := 0; i < lv.t.NumField(); i++ {
				sf := lv.t.Field(i)
				index := append(append([]int(nil), lv.index...), i)
				tag := sf.Tag.Get("json")
				if tag == "-" {
					continue
				}
				name, _, _ := strings.Cut(tag, ",")
				if sf.Anonymous && name == "" {
					ft := sf.Type
					if ft.Kind() == reflect.Pointer {
						ft = ft.Elem()
					}
					if ft.Kind() == reflect.Struct {
						next = append(next, level{t: ft, index: index})
						continue
					}
				}
				if !sf.IsExported() {
					continue
				}
				if name == "" {
					name = sf.Name
				}
				required := false
				for _, opt := range strings.Split(sf.Tag.Get("rpc"), ",") {
					if opt == "required" {
						required = true
					}
				}
				depthNames[name]++
				found = append(found, fieldInfo{name: name, index: index, required: required})
			}
		}
		for _, f := range found {
			if _, hidden := si.byName[f.name]; hidden {
				continue
			}
			if depthNames[f.name] > 1 {
				si.err = fmt.Errorf("type %s has more than one field named %q", t, f.name)
				return si
			}
			si.byName[f.name] = len(si.fields)
			si.fields = append(si.fields, f)
		}
		current = next
	}
	return si
}

// splitNumber breaks a JSON number literal into sign, significand and
// decimal exponent, normalized as SPDK's json_number_split does: trailing
// zeros of the significand are folded into a negative exponent, and a
// positive exponent is multiplied into the significand while it fits.
func splitNumber(lit string) (neg bool, sig uint64, exp int64, err error) {
	errRange := fmt.Errorf("%s out of range", literal(lit))
	s := lit
	if strings.HasPrefix(s, "-") {
		neg = true
		s = s[1:]
	}
	var expDigits uint64
	var fracDigits int64
	expNeg := false
	inFrac, inExp := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			inFrac = true
		case c == 'e' || c == 'E':
			inExp = true
		case c == '-' && inExp:
			expNeg = true
		case c == '+' && inExp:
		case c >= '0' && c <= '9':
			d := uint64(c - '0')
			if inExp {
				if expDigits > (math.MaxUint64-d)/10 {
					return false, 0, 0, errRange
				}
				expDigits = expDigits*10 + d
				continue
			}
			if sig > (math.MaxUint64-d)/10 {
				return false, 0, 0, errRange
			}
			sig = sig*10 + d
			if inFrac {
				fracDigits++
			}
		default:
			return false, 0, 0, fmt.Errorf("%s is not a number", excerpt.Quote(lit))
		}
	}
	if expDigits > math.MaxInt64 {
		return false, 0, 0, errRange
	}
	exp = int64(expDigits)
	if expNeg {
		exp = -exp
	}
	exp -= fracDigits
	if exp < 0 {
		for exp < 0 && sig >= 10 && sig%10 == 0 {
			sig /= 10
			exp++
		}
	} else {
		for exp > 0 && sig <= math.MaxUint64/10 {
			sig *= 10
			exp--
		}
	}
	return neg, sig, exp, nil
}

// numberToUint converts lit to an unsigned integer of the given bit size.
func numberToUint(lit string, bits int) (uint64, error) {
	neg, sig, exp, err := splitNumber(lit)
	if err != nil {
		return 0, err
	}
	if exp != 0 || neg || (bits < 64 && sig > 1<<bits-1) {
		return 0, fmt.Errorf("%s is not a uint%d", literal(lit), bits)
	}
	return sig, nil
}

// numberToInt converts lit to a signed integer of the given bit size.
func numberToInt(lit string, bits int) (int64, error) {
	neg, sig, exp, err := splitNumber(lit)
	if err != nil {
		return 0, err
	}
	limit := uint64(1) << (bits - 1) // |min|; max is limit-1
	if exp != 0 || (neg && sig > limit) || (!neg && sig >= limit) {
		return 0, fmt.Errorf("%s is not an int%d", literal(lit), bits)
	}
	if neg {
		return -int64(sig-1) - 1, nil
	}
	return int64(sig), nil
}

// literal is a number literal as messages quote it: as it is, or an
// excerpt if it is long.
func literal(lit string) string {
	if len(lit) <= excerpt.MaxBytes {
		return lit
	}
	return excerpt.Quote(lit)
}
