// Bench: sequential ping round trips (p50/p99), then pipelined ping throughput on one
// connection with at most 256 requests in flight: by default in Pipeline batches of 256
// (the shape the other SDKs' bench programs use), or with --goroutines, 256 goroutines
// each calling Ping in turn. Prints one JSON line.
//
//	go run ./cmd/bench --pings 20000 --pipelined 100000
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	madsidecar "github.com/madsidecar/madsidecar/clients/go"
)

func main() {
	pings := flag.Int("pings", 20000, "sequential pings measured")
	warmup := flag.Int("warmup", 1000, "sequential pings before measuring")
	pipelined := flag.Int("pipelined", 100000, "pipelined pings")
	inflight := flag.Int("inflight", 256, "most pipelined pings in flight")
	goroutines := flag.Bool("goroutines", false, "pipeline through concurrent Ping calls, not Pipeline batches")
	flag.Parse()
	if err := run(*pings, *warmup, *pipelined, *inflight, *goroutines); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(pings, warmup, pipelined, inflight int, goroutines bool) error {
	ctx := context.Background()
	c, err := madsidecar.Connect(ctx, &madsidecar.Options{ClientName: "madsidecar-go-bench", Timeout: time.Minute})
	if err != nil {
		return err
	}
	defer c.Close()

	for i := 0; i < warmup; i++ {
		if _, err := c.Ping(ctx); err != nil {
			return err
		}
	}
	samples := make([]time.Duration, pings)
	for i := range samples {
		start := time.Now()
		if _, err := c.Ping(ctx); err != nil {
			return err
		}
		samples[i] = time.Since(start)
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })

	start := time.Now()
	if goroutines {
		err = concurrentPings(ctx, c, pipelined, inflight)
	} else {
		err = batchedPings(ctx, c, pipelined, inflight)
	}
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	line, err := json.Marshal(result{
		SDK:           "go",
		PingP50Us:     percentile(samples, 0.50),
		PingP99Us:     percentile(samples, 0.99),
		PipelinedPerS: float64(pipelined) / elapsed.Seconds(),
	})
	if err != nil {
		return err
	}
	fmt.Println(string(line))
	return nil
}

type result struct {
	SDK           string  `json:"sdk"`
	PingP50Us     float64 `json:"ping_p50_us"`
	PingP99Us     float64 `json:"ping_p99_us"`
	PipelinedPerS float64 `json:"pipelined_per_s"`
}

func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return float64(sorted[i].Nanoseconds()) / 1000
}

// batchedPings sends `total` pings in Pipeline batches of `window`.
func batchedPings(ctx context.Context, c *madsidecar.Client, total, window int) error {
	batch := make([]madsidecar.Request, window)
	for i := range batch {
		batch[i] = madsidecar.Request{Method: "ping"}
	}
	for sent := 0; sent < total; sent += window {
		size := min(window, total-sent)
		replies, err := c.Pipeline(ctx, batch[:size])
		if err != nil {
			return err
		}
		for _, r := range replies {
			if r.Err != nil {
				return r.Err
			}
		}
	}
	return nil
}

// concurrentPings runs `workers` goroutines, each starting its next Ping as soon as its
// reply came: the client pipelines them on its one connection.
func concurrentPings(ctx context.Context, c *madsidecar.Client, total, workers int) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(total) {
				if _, err := c.Ping(ctx); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	return nil
}
