package deploy_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, COPY...
	args string
	line int
}

// stage is one FROM stage of a Dockerfile.
type stage struct {
	name string // the AS name, if any
	ins  []instruction
}

// parseDockerfile reads the instructions of a Dockerfile, by stage. It knows
// only what our Dockerfile uses: comments, continuation lines and the
// instructions' text; the tests below interpret the few they need.
func parseDockerfile(path string) ([]stage, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var (
		stages  []stage
		global  stage // ARGs before the first FROM
		pending strings.Builder
		start   int
	)
	cur := &global
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if pending.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if pending.Len() == 0 {
			start = n
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			pending.WriteString(cont + " ")
			continue
		}
		pending.WriteString(line)
		text := pending.String()
		pending.Reset()
		cmd, args, _ := strings.Cut(text, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start}
		if in.cmd == "FROM" {
			st := stage{}
			if _, name, ok := strings.Cut(strings.ToLower(in.args), " as "); ok {
				st.name = strings.TrimSpace(name)
			}
			stages = append(stages, st)
			cur = &stages[len(stages)-1]
		}
		cur.ins = append(cur.ins, in)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if pending.Len() > 0 {
		return nil, fmt.Errorf("%s: continuation line at the end of the file", path)
	}
	if len(stages) == 0 {
		return nil, fmt.Errorf("%s: no FROM", path)
	}
	stages[0].ins = append(global.ins, stages[0].ins...)
	return stages, nil
}

// all returns the arguments of every instruction cmd in the stage.
func (s stage) all(cmd string) []string {
	var out []string
	for _, in := range s.ins {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

// argDefaults returns the defaults of the stage's ARG instructions.
func (s stage) argDefaults() map[string]string {
	m := map[string]string{}
	for _, a := range s.all("ARG") {
		k, v, _ := strings.Cut(a, "=")
		m[k] = strings.Trim(v, `"`)
	}
	return m
}

// expand substitutes ${NAME} and $NAME from vars, as the Dockerfile does.
func expand(s string, vars map[string]string) string {
	return os.Expand(s, func(k string) string { return vars[k] })
}

// labelRE matches one key=value of a LABEL instruction, value quoted or not.
var labelRE = regexp.MustCompile(`([A-Za-z0-9._/-]+)=(?:"((?:[^"\\]|\\.)*)"|(\S+))`)

// labels parses the stage's LABEL instructions, expanding variables.
func (s stage) labels(vars map[string]string) map[string]string {
	m := map[string]string{}
	for _, a := range s.all("LABEL") {
		for _, sub := range labelRE.FindAllStringSubmatch(a, -1) {
			v := sub[2]
			if v == "" {
				v = sub[3]
			}
			m[sub[1]] = expand(v, vars)
		}
	}
	return m
}

// jsonArgs parses an exec-form argument list: ["a", "b"].
func jsonArgs(s string) ([]string, error) {
	var out []string
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		return nil, fmt.Errorf("want exec form (a JSON array), got %s: %w", s, err)
	}
	return out, nil
}

// healthcheck parses HEALTHCHECK [--option=value...] CMD ["..."] into the
// image config's form.
func healthcheck(s string) (*v1.HealthConfig, error) {
	hc := &v1.HealthConfig{}
	for {
		s = strings.TrimSpace(s)
		opt, ok := strings.CutPrefix(s, "--")
		if !ok {
			break
		}
		kv, rest, _ := strings.Cut(opt, " ")
		k, v, _ := strings.Cut(kv, "=")
		s = rest
		var err error
		switch k {
		case "interval":
			hc.Interval, err = time.ParseDuration(v)
		case "timeout":
			hc.Timeout, err = time.ParseDuration(v)
		case "start-period":
			hc.StartPeriod, err = time.ParseDuration(v)
		case "retries":
			hc.Retries, err = strconv.Atoi(v)
		default:
			err = fmt.Errorf("unknown option --%s", k)
		}
		if err != nil {
			return nil, fmt.Errorf("HEALTHCHECK: %w", err)
		}
	}
	cmd, ok := strings.CutPrefix(s, "CMD ")
	if !ok {
		return nil, fmt.Errorf("HEALTHCHECK: want CMD [...], got %q", s)
	}
	args, err := jsonArgs(strings.TrimSpace(cmd))
	if err != nil {
		return nil, fmt.Errorf("HEALTHCHECK: %w", err)
	}
	hc.Test = append([]string{"CMD"}, args...)
	return hc, nil
}
