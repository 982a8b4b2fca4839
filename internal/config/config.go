// Package config loads a daemon's configuration from environment variables
// and command-line flags of the same names (12-factor), into a plain struct
// described by field tags:
//
//	QueueName string `env:"CPV_QUEUE" default:"cpv-refresh" help:"work queue name"`
//	Secret    string `env:"CPV_CLIENT_SECRET" secret:"true" help:"..."`
//	TokenFile string `env:"CPV_FEDERATED_TOKEN_FILE" fallback:"AZURE_FEDERATED_TOKEN_FILE"`
//
// Flags win over the environment, which wins over defaults. The flag for
// CPV_QUEUE_NAME is -queue-name. Every bad value is reported, one message
// per field, in a single error. Only cmd/ packages call Load, with
// os.Getenv and os.Args; nothing else reads the environment.
//
// Reference lists the fields for documentation; docs/configuration.md is
// generated from it and a test keeps the two equal.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Field describes one configuration setting.
type Field struct {
	Env      string
	Fallback string // another variable read when Env is unset (e.g. the platform's own name for it)
	Flag     string
	Default  string
	Help     string
	Type     string
	Secret   bool
}

// Load fills the struct cfg points to. getenv is os.Getenv in main.
func Load(cfg any, args []string, getenv func(string) string, name string) error {
	v := reflect.ValueOf(cfg)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return errors.New("config: Load needs a pointer to a struct")
	}
	fields, values, err := walk(v.Elem())
	if err != nil {
		return err
	}
	var errs []error
	// Defaults, then the environment.
	for i, f := range fields {
		if f.Default != "" {
			if err := set(values[i], f.Default); err != nil {
				errs = append(errs, fmt.Errorf("config: default of %s: %w", f.Env, err))
			}
		}
		s, ok := lookup(getenv, f.Env)
		if !ok && f.Fallback != "" {
			s, ok = lookup(getenv, f.Fallback)
		}
		if ok {
			if err := set(values[i], s); err != nil {
				errs = append(errs, fmt.Errorf("config: %s: %w", f.Env, err))
			}
		}
	}
	// Flags of the same names override.
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for i, f := range fields {
		fs.Func(f.Flag, f.Help, func(s string) error { return set(values[i], s) })
	}
	if err := fs.Parse(args); err != nil {
		errs = append(errs, fmt.Errorf("config: %w", err))
	} else if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("config: unexpected arguments %q", fs.Args()))
	}
	return errors.Join(errs...)
}

func lookup(getenv func(string) string, key string) (string, bool) {
	s := getenv(key)
	return s, s != ""
}

// Reference lists the settings of a config struct, in declaration order.
func Reference(cfg any) []Field {
	v := reflect.ValueOf(cfg)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	fields, _, err := walk(v)
	if err != nil {
		panic(err)
	}
	return fields
}

// Usage renders the settings as a flag-style help text.
func Usage(cfg any) string {
	var b strings.Builder
	for _, f := range Reference(cfg) {
		fmt.Fprintf(&b, "  -%s %s (env %s", f.Flag, f.Type, f.Env)
		if f.Default != "" {
			fmt.Fprintf(&b, ", default %q", f.Default)
		}
		fmt.Fprintf(&b, ")\n      %s\n", f.Help)
	}
	return b.String()
}

// Markdown renders the settings as a table for docs/configuration.md.
func Markdown(cfg any) string {
	var b strings.Builder
	b.WriteString("| Variable | Flag | Type | Default | Meaning |\n|---|---|---|---|---|\n")
	for _, f := range Reference(cfg) {
		def := f.Default
		if def != "" {
			def = "`" + strings.ReplaceAll(def, "|", `\|`) + "`"
		}
		help := f.Help
		if f.Secret {
			help += " (secret: never logged)"
		}
		fmt.Fprintf(&b, "| `%s` | `-%s` | %s | %s | %s |\n", f.Env, f.Flag, f.Type, def, strings.ReplaceAll(help, "|", `\|`))
	}
	return b.String()
}

// Redacted returns the settings as name=value pairs for a start-up log
// line, with secrets replaced by "set" or "unset".
func Redacted(cfg any) []any {
	v := reflect.ValueOf(cfg)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	fields, values, err := walk(v)
	if err != nil {
		panic(err)
	}
	out := make([]any, 0, 2*len(fields))
	for i, f := range fields {
		val := fmt.Sprint(values[i].Interface())
		if f.Secret {
			if values[i].IsZero() {
				val = "unset"
			} else {
				val = "set"
			}
		}
		out = append(out, strings.ToLower(f.Env), val)
	}
	return out
}

var durationType = reflect.TypeOf(time.Duration(0))

func walk(v reflect.Value) ([]Field, []reflect.Value, error) {
	var fields []Field
	var values []reflect.Value
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		fv := v.Field(i)
		if sf.Anonymous && sf.Type.Kind() == reflect.Struct {
			f, vals, err := walk(fv)
			if err != nil {
				return nil, nil, err
			}
			fields = append(fields, f...)
			values = append(values, vals...)
			continue
		}
		env := sf.Tag.Get("env")
		if env == "" {
			continue
		}
		typ, err := typeName(sf.Type)
		if err != nil {
			return nil, nil, fmt.Errorf("config: field %s: %w", sf.Name, err)
		}
		fields = append(fields, Field{
			Env:      env,
			Fallback: sf.Tag.Get("fallback"),
			Flag:     flagName(env),
			Default:  sf.Tag.Get("default"),
			Help:     sf.Tag.Get("help"),
			Type:     typ,
			Secret:   sf.Tag.Get("secret") == "true",
		})
		values = append(values, fv)
	}
	return fields, values, nil
}

// flagName turns CPV_QUEUE_NAME into queue-name.
func flagName(env string) string {
	env = strings.TrimPrefix(env, "CPV_")
	return strings.ToLower(strings.ReplaceAll(env, "_", "-"))
}

func typeName(t reflect.Type) (string, error) {
	switch {
	case t == durationType:
		return "duration", nil
	case t.Kind() == reflect.String:
		return "string", nil
	case t.Kind() == reflect.Int:
		return "int", nil
	case t.Kind() == reflect.Bool:
		return "bool", nil
	case t.Kind() == reflect.Float64:
		return "float", nil
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		return "list", nil
	}
	return "", fmt.Errorf("unsupported type %s", t)
}

func set(v reflect.Value, s string) error {
	switch {
	case v.Type() == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%q is not a duration (e.g. 30s, 5m)", s)
		}
		v.SetInt(int64(d))
	case v.Kind() == reflect.String:
		v.SetString(s)
	case v.Kind() == reflect.Int:
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%q is not a whole number", s)
		}
		v.SetInt(int64(n))
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		v.SetBool(b)
	case v.Kind() == reflect.Float64:
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", s)
		}
		v.SetFloat(f)
	case v.Kind() == reflect.Slice:
		var items []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				items = append(items, p)
			}
		}
		v.Set(reflect.ValueOf(items))
	}
	return nil
}
