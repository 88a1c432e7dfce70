package config

import (
	"flag"
	"io"
	"math"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// The custom types must work as flag values.
var (
	_ flag.Value = (*StringList)(nil)
	_ flag.Value = (*ByteSize)(nil)
)

func TestStringListSet(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     StringList
	}{
		{"a single value is a list of one", "a:9092", StringList{"a:9092"}},
		{"commas separate values", "a:9092,b:9092,c:9092", StringList{"a:9092", "b:9092", "c:9092"}},
		{"spaces around values are trimmed", " a:9092 ,  b:9092 ", StringList{"a:9092", "b:9092"}},
		{"empty elements are dropped", ",a,,b,", StringList{"a", "b"}},
		{"an empty string is an empty list", "", nil},
		{"only commas and spaces is an empty list", " , ,", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := StringList{"previous"}
			require.NoError(t, l.Set(tc.in))
			assert.Equal(t, tc.want, l, "Set replaces the list")
		})
	}
}

func TestStringListString(t *testing.T) {
	for _, tc := range []struct {
		name string
		l    StringList
		want string
	}{
		{"an empty list is an empty string", nil, ""},
		{"one element is itself", StringList{"a"}, "a"},
		{"elements are joined by commas", StringList{"a", "b", "c"}, "a,b,c"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, tc.l.String())
			var back StringList
			require.NoError(t, back.Set(tc.l.String()))
			assert.Equal(t, tc.l, back, "String round-trips through Set")
		})
	}
}

func TestStringListFlag(t *testing.T) {
	l := StringList{"default"}
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Var(&l, "list", "")
	require.NoError(t, fs.Parse([]string{"-list", "a,b", "-list", "c"}))
	assert.Equal(t, StringList{"c"}, l, "a repeated flag replaces the list")
	assert.Equal(t, "default", fs.Lookup("list").DefValue)
}

func TestStringListYAML(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      StringList
		wantErr   bool
	}{
		{name: "a block sequence", doc: "l:\n  - a\n  - b\n", want: StringList{"a", "b"}},
		{name: "a flow sequence", doc: "l: [a, b]\n", want: StringList{"a", "b"}},
		{name: "a comma-separated string", doc: "l: a, b,c\n", want: StringList{"a", "b", "c"}},
		{name: "a quoted comma-separated string", doc: "l: \"a,b\"\n", want: StringList{"a", "b"}},
		{name: "a single string", doc: "l: a\n", want: StringList{"a"}},
		{name: "an empty sequence", doc: "l: []\n", want: StringList{}},
		{name: "a mapping is an error", doc: "l: {a: b}\n", wantErr: true},
		{name: "a sequence of mappings is an error", doc: "l: [{a: b}]\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v struct {
				L StringList `yaml:"l"`
			}
			err := yaml.Unmarshal([]byte(tc.doc), &v)
			if tc.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, v.L)
		})
	}
}

func TestByteSizeSet(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     ByteSize
	}{
		{"a plain number is bytes", "1048576", 1048576},
		{"zero is allowed", "0", 0},
		{"B is bytes", "512B", 512},
		{"KiB is 1024 bytes", "512KiB", 512 << 10},
		{"MiB is 1024 KiB", "64MiB", 64 << 20},
		{"GiB is 1024 MiB", "2GiB", 2 << 30},
		{"KB is 1000 bytes", "5KB", 5000},
		{"MB is 1000 KB", "5MB", 5_000_000},
		{"GB is 1000 MB", "5GB", 5_000_000_000},
		{"spaces around the value are ignored", "  7MiB  ", 7 << 20},
		{"a space between number and unit is allowed", "7 MiB", 7 << 20},
		{"the largest int64 fits", strconv.FormatInt(math.MaxInt64, 10), math.MaxInt64},
		{"the largest whole number of GiB fits", strconv.FormatInt(math.MaxInt64>>30, 10) + "GiB", ByteSize(math.MaxInt64 >> 30 << 30)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b ByteSize
			require.NoError(t, b.Set(tc.in))
			assert.Equal(t, tc.want, b)
		})
	}
}

func TestByteSizeSetRejects(t *testing.T) {
	for _, tc := range []struct {
		name, in string
	}{
		{"a negative number", "-1"},
		{"a negative number with a unit", "-5MiB"},
		{"garbage", "lots"},
		{"an empty string", ""},
		{"a unit without a number", "MiB"},
		{"a fraction", "1.5MiB"},
		{"an unknown unit", "5TiB"},
		{"a lower-case unit", "5mib"},
		{"a unit before the number", "MiB5"},
		{"two units", "5KiBMiB"},
		{"a number too large for int64", "9223372036854775808"},
		{"a size that overflows int64 after applying the unit", "9223372036854775807KiB"},
		{"a size that overflows int64 exactly at 2^63", "8589934592GiB"},
		{"a decimal size that overflows int64", "9223372036854776GB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := ByteSize(42)
			err := b.Set(tc.in)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "is not a size")
			assert.Equal(t, ByteSize(42), b, "a rejected value leaves the size unchanged")
		})
	}
}

func TestByteSizeString(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    ByteSize
		want string
	}{
		{"zero is plain", 0, "0"},
		{"an odd number of bytes is plain", 1000, "1000"},
		{"a multiple of 1024 is KiB", 3 << 10, "3KiB"},
		{"a multiple of 1 MiB is MiB", 64 << 20, "64MiB"},
		{"a multiple of 1 GiB is GiB", 2 << 30, "2GiB"},
		{"1536 KiB is not a whole MiB", 1536 << 10, "1536KiB"},
		{"a decimal megabyte is plain", 5_000_000, "5000000"},
		{"the largest int64 is plain", math.MaxInt64, "9223372036854775807"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, tc.b.String())
			var back ByteSize
			require.NoError(t, back.Set(tc.b.String()))
			assert.Equal(t, tc.b, back, "String round-trips through Set")
		})
	}
}

func TestByteSizeYAML(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      ByteSize
		wantErr   bool
	}{
		{name: "an integer is bytes", doc: "s: 1024\n", want: 1024},
		{name: "a string with a unit", doc: "s: 16MiB\n", want: 16 << 20},
		{name: "a quoted string with a unit", doc: "s: \"1 GiB\"\n", want: 1 << 30},
		{name: "a negative size is an error", doc: "s: -1\n", wantErr: true},
		{name: "garbage is an error", doc: "s: big\n", wantErr: true},
		{name: "a sequence is an error", doc: "s: [1]\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v struct {
				S ByteSize `yaml:"s"`
			}
			err := yaml.Unmarshal([]byte(tc.doc), &v)
			if tc.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, v.S)
		})
	}
}

func TestURLRedactsOnlyThePassword(t *testing.T) {
	for in, want := range map[string]string{
		"mongodb://alice:s3cr%40t@db-0:27017,db-1:27017/mqtt?replicaSet=rs0": "mongodb://alice:<redacted>@db-0:27017,db-1:27017/mqtt?replicaSet=rs0",
		"mongodb+srv://bob:p@ss@cluster0.example.net/?retryWrites=true":      "mongodb+srv://bob:<redacted>@cluster0.example.net/?retryWrites=true",
		"mongodb://carol@db/": "mongodb://carol@db/",
		"mongodb://db:27017":  "mongodb://db:27017",
		"mongodb://db/?x=a@b": "mongodb://db/?x=a@b",
		"":                    "",
	} {
		u := URL(in)
		assert.Equal(t, want, u.String(), in)
		y, err := u.MarshalYAML()
		require.NoError(t, err)
		assert.Equal(t, want, y)
		assert.Equal(t, in, u.Value())
	}
}
