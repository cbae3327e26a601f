package main

import (
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"
)

// A config file mirrors the command tree: global flags at the top level, and a section per
// command holding that command's flags, nested like the commands are:
//
//	run-id: exp1
//	nats: nats://10.0.0.5:4222
//	bench:
//	  transport:
//	    pairs: 200000
//
// The run id is written `run-id` because `run:` is the section of the `autoif run` command.
// Precedence: command line, then AUTOIF_* environment, then the config file, then defaults.
// A key that names no flag or command is an error naming the key, so a typo never silently
// falls back to a default.

const configMetaKey = "autoif.config"

type configFile struct {
	path string
	root map[string]any
}

// wireConfigAndEnv gives every flag an AUTOIF_* environment variable and makes every command
// apply its config section, then check its numeric flags' bounds, before it runs.
func wireConfigAndEnv(app *cli.App) {
	for _, f := range app.Flags {
		setEnvVars(f, envName(nil, f.Names()[0]))
	}
	var walk func(path []string, cmds []*cli.Command)
	walk = func(path []string, cmds []*cli.Command) {
		for _, cmd := range cmds {
			p := append(append([]string(nil), path...), cmd.Name)
			for _, f := range cmd.Flags {
				setEnvVars(f, envName(p, f.Names()[0]))
			}
			if cmd.OnUsageError == nil {
				cmd.OnUsageError = usageError
			}
			before := cmd.Before
			cmd.Before = func(c *cli.Context) error {
				if err := applyConfigSection(c, p); err != nil {
					return err
				}
				if err := checkBounds(c, commandPath(p)); err != nil {
					return err
				}
				if before != nil {
					return before(c)
				}
				return nil
			}
			walk(p, cmd.Subcommands)
		}
	}
	walk(nil, app.Commands)
}

func envName(path []string, flag string) string {
	parts := append(append([]string{"AUTOIF"}, path...), flag)
	return strings.ToUpper(strings.ReplaceAll(strings.Join(parts, "_"), "-", "_"))
}

// setEnvVars fills the EnvVars field every urfave/cli v2 flag type has, unless the flag
// declares its own.
func setEnvVars(f cli.Flag, name string) {
	v := reflect.ValueOf(f)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return
	}
	field := v.Elem().FieldByName("EnvVars")
	if !field.IsValid() || !field.CanSet() || field.Len() > 0 {
		return
	}
	field.Set(reflect.ValueOf([]string{name}))
}

// loadConfig reads --config, checks every key against the command tree and applies the
// global keys. Command sections are applied by each command's Before.
func loadConfig(c *cli.Context) error {
	path := c.String(flagConfig)
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var root map[string]any
	if err := yaml.Unmarshal(data, &root); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	cf := &configFile{path: path, root: root}
	if err := cf.check(c.App.Flags, c.App.Commands, nil, root); err != nil {
		return err
	}
	if c.App.Metadata == nil {
		c.App.Metadata = map[string]any{}
	}
	c.App.Metadata[configMetaKey] = cf
	return cf.apply(c, c.App.Flags, root, nil)
}

func (cf *configFile) check(flags []cli.Flag, cmds []*cli.Command, path []string, section map[string]any) error {
	keys := make([]string, 0, len(section))
	for k := range section {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := section[k]
		if sub, ok := v.(map[string]any); ok {
			if cmd := findCommand(cmds, k); cmd != nil {
				if err := cf.check(cmd.Flags, cmd.Subcommands, append(path, k), sub); err != nil {
					return err
				}
				continue
			}
		} else if findFlag(flags, k) != nil {
			continue
		}
		return fmt.Errorf("config %s: unknown key %q", cf.path, strings.Join(append(append([]string(nil), path...), k), "."))
	}
	return nil
}

func applyConfigSection(c *cli.Context, path []string) error {
	cf, _ := c.App.Metadata[configMetaKey].(*configFile)
	if cf == nil {
		return nil
	}
	section := cf.root
	for _, name := range path {
		next, ok := section[name].(map[string]any)
		if !ok {
			return nil
		}
		section = next
	}
	return cf.apply(c, c.Command.Flags, section, path)
}

func (cf *configFile) apply(c *cli.Context, flags []cli.Flag, section map[string]any, path []string) error {
	for k, v := range section {
		if _, isSection := v.(map[string]any); isSection {
			continue
		}
		f := findFlag(flags, k)
		if f == nil {
			continue
		}
		name := f.Names()[0]
		if c.IsSet(name) {
			continue
		}
		values := []any{v}
		if list, ok := v.([]any); ok {
			values = list
		}
		for _, item := range values {
			if err := c.Set(name, fmt.Sprint(item)); err != nil {
				return fmt.Errorf("config %s: key %q: %w", cf.path, strings.Join(append(append([]string(nil), path...), k), "."), err)
			}
		}
	}
	return nil
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

func findFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}
