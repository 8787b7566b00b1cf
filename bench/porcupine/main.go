// Command porcupine-check times Porcupine on histories exported by export.py, so that
// compare.py can report dscore's checker time as a ratio to Porcupine's on the same input.
//
// Usage: porcupine-check [-timeout 60s] [-repeat 1] FILE.jsonl...
//
// Each file starts with a header line {"model", "operations", "processes", "initial"},
// followed by one line per operation:
//
//	{"client_id": 3, "input": {"f": "cas", "key": "k0", "value": "1", "to": "2"},
//	 "output": {"value": "", "unknown": false}, "call": 17, "return": 20}
//
// Values are opaque strings: for the register the exporter writes each EDN value as its
// JSON text (so 1, "1" and nil stay distinct), for kv the string itself. "return": null
// marks an indeterminate op (:info, or never completed); it returns after everything else,
// as Porcupine's own Jepsen tests do with unknown outcomes.
//
// For each file it prints one JSON line: model, operations, processes, the ops given to
// Porcupine, partitions, the best time of the check over -repeat runs, and the verdict.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/anishathalye/porcupine"
)

type opKind uint8

const (
	opRead opKind = iota
	opWrite
	opCas
	opAppend
)

// input is comparable and small, so the checker's interface{} boxing stays cheap.
type input struct {
	op    opKind
	key   string
	value string // read: unused; write/append: the argument; cas: the expected value
	to    string // cas: the new value
}

type output struct {
	value   string // read: the value read
	unknown bool   // indeterminate: the op may have taken effect at any point, or never
}

// step is the sequential specification both models share; only the ops they admit differ.
// State is the value held, as a string.
func step(state, in, out interface{}) (bool, interface{}) {
	st := state.(string)
	inp := in.(input)
	o := out.(output)
	switch inp.op {
	case opRead:
		return o.unknown || o.value == st, st
	case opWrite:
		return true, inp.value
	case opCas:
		if inp.value == st {
			return true, inp.to
		}
		// An unknown cas whose expected value does not match simply did not take effect.
		return o.unknown, st
	default: // opAppend
		return true, st + inp.value
	}
}

func describe(in, out interface{}) string {
	inp := in.(input)
	o := out.(output)
	suffix := ""
	if o.unknown {
		suffix = " -> unknown"
	}
	switch inp.op {
	case opRead:
		return fmt.Sprintf("read(%s) -> %q", inp.key, o.value)
	case opWrite:
		return fmt.Sprintf("write(%s, %q)%s", inp.key, inp.value, suffix)
	case opCas:
		return fmt.Sprintf("cas(%s, %q, %q)%s", inp.key, inp.value, inp.to, suffix)
	default:
		return fmt.Sprintf("append(%s, %q)%s", inp.key, inp.value, suffix)
	}
}

func partitionByKey(history []porcupine.Operation) [][]porcupine.Operation {
	index := map[string]int{}
	var partitions [][]porcupine.Operation
	for _, op := range history {
		key := op.Input.(input).key
		i, seen := index[key]
		if !seen {
			i = len(partitions)
			index[key] = i
			partitions = append(partitions, nil)
		}
		partitions[i] = append(partitions[i], op)
	}
	return partitions
}

func partitionEventsByKey(history []porcupine.Event) [][]porcupine.Event {
	index := map[string]int{}
	keyOfId := map[int]string{} // a return event carries an output, not the key
	var partitions [][]porcupine.Event
	for _, event := range history {
		var key string
		if event.Kind == porcupine.CallEvent {
			key = event.Value.(input).key
			keyOfId[event.Id] = key
		} else {
			key = keyOfId[event.Id]
		}
		i, seen := index[key]
		if !seen {
			i = len(partitions)
			index[key] = i
			partitions = append(partitions, nil)
		}
		partitions[i] = append(partitions[i], event)
	}
	return partitions
}

// registerModel: one register holding nil (JSON "null") at first; read, write, cas.
func registerModel(initial string) porcupine.Model {
	return porcupine.Model{
		Init:              func() interface{} { return initial },
		Step:              step,
		Equal:             func(a, b interface{}) bool { return a.(string) == b.(string) },
		DescribeOperation: describe,
	}
}

// kvModel: independent string values per key, "" at first; get, put, append, cas.
// Partitioning by key lets Porcupine check each key on its own.
func kvModel(initial string) porcupine.Model {
	model := registerModel(initial)
	model.Partition = partitionByKey
	model.PartitionEvent = partitionEventsByKey
	return model
}

var registerFunctions = map[string]opKind{"read": opRead, "write": opWrite, "cas": opCas}
var kvFunctions = map[string]opKind{"get": opRead, "put": opWrite, "append": opAppend, "cas": opCas}

type header struct {
	Model      string `json:"model"`
	Operations int    `json:"operations"`
	Processes  int    `json:"processes"`
	Initial    string `json:"initial"`
}

type jsonOp struct {
	ClientId int `json:"client_id"`
	Input    struct {
		F     string `json:"f"`
		Key   string `json:"key"`
		Value string `json:"value"`
		To    string `json:"to"`
	} `json:"input"`
	Output struct {
		Value   string `json:"value"`
		Unknown bool   `json:"unknown"`
	} `json:"output"`
	Call   int64  `json:"call"`
	Return *int64 `json:"return"`
}

func load(path string) (header, porcupine.Model, []porcupine.Operation, error) {
	var h header
	file, err := os.Open(path)
	if err != nil {
		return h, porcupine.Model{}, nil, err
	}
	defer file.Close()
	scanner := bufio.NewScanner(file)
	scanner.Buffer(make([]byte, 1<<20), 1<<26)
	if !scanner.Scan() {
		return h, porcupine.Model{}, nil, fmt.Errorf("%s: empty file", path)
	}
	if err := json.Unmarshal(scanner.Bytes(), &h); err != nil {
		return h, porcupine.Model{}, nil, fmt.Errorf("%s:1: %v", path, err)
	}
	var model porcupine.Model
	var functions map[string]opKind
	switch h.Model {
	case "register":
		model, functions = registerModel(h.Initial), registerFunctions
	case "kv":
		model, functions = kvModel(h.Initial), kvFunctions
	default:
		return h, model, nil, fmt.Errorf("%s:1: unknown model %q", path, h.Model)
	}
	var ops []porcupine.Operation
	for line := 2; scanner.Scan(); line++ {
		var j jsonOp
		if err := json.Unmarshal(scanner.Bytes(), &j); err != nil {
			return h, model, nil, fmt.Errorf("%s:%d: %v", path, line, err)
		}
		kind, known := functions[j.Input.F]
		if !known {
			return h, model, nil, fmt.Errorf("%s:%d: model %s has no op %q", path, line, h.Model, j.Input.F)
		}
		ret := int64(math.MaxInt64)
		if j.Return != nil {
			ret = *j.Return
		}
		ops = append(ops, porcupine.Operation{
			ClientId: j.ClientId,
			Input:    input{kind, j.Input.Key, j.Input.Value, j.Input.To},
			Call:     j.Call,
			Output:   output{j.Output.Value, j.Output.Unknown},
			Return:   ret,
		})
	}
	return h, model, ops, scanner.Err()
}

type result struct {
	File       string  `json:"file"`
	Model      string  `json:"model"`
	Operations int     `json:"operations"`
	Processes  int     `json:"processes"`
	OpsChecked int     `json:"ops_checked"`
	Partitions int     `json:"partitions"`
	Seconds    float64 `json:"seconds"`
	Verdict    string  `json:"verdict"`
}

func main() {
	timeout := flag.Duration("timeout", 0, "per-check time budget (0: none); past it the verdict is Unknown")
	repeat := flag.Int("repeat", 1, "run each check this many times and report the fastest")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: porcupine-check [-timeout D] [-repeat N] FILE.jsonl...")
		os.Exit(2)
	}
	encoder := json.NewEncoder(os.Stdout)
	for _, path := range flag.Args() {
		h, model, ops, err := load(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		partitions := 1
		if model.Partition != nil {
			partitions = len(model.Partition(ops))
		}
		best := math.Inf(1)
		var verdict porcupine.CheckResult
		for run := 0; run < *repeat; run++ {
			started := time.Now()
			verdict = porcupine.CheckOperationsTimeout(model, ops, *timeout)
			best = math.Min(best, time.Since(started).Seconds())
			if verdict == porcupine.Unknown {
				break // another run would only time out again
			}
		}
		if err := encoder.Encode(result{path, h.Model, h.Operations, h.Processes, len(ops), partitions, best, string(verdict)}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
}
