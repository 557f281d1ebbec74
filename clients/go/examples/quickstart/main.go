// Quickstart: connect to the node's sidecar ($MADSIDECAR_SOCKET, else
// /run/madsidecar/madsidecar.sock), then use the cache, a lock, a rate limit and
// pub/sub.
//
//	go run ./examples/quickstart
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	madsidecar "github.com/madsidecar/madsidecar/clients/go"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := madsidecar.Connect(ctx, &madsidecar.Options{ClientName: "quickstart"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Printf("connected to %s (node %s, namespace %s)\n", c.Path(), c.ServerInfo().NodeID, c.ServerInfo().Namespace)

	// Cache: values are any MessagePack value and come back exactly.
	if _, err := c.CacheSet(ctx, madsidecar.CacheSetRequest{Key: "quickstart:greeting", Value: map[string]any{"text": "hello", "n": int64(42)}, TTLMs: 60_000}); err != nil {
		log.Fatal(err)
	}
	entry, err := c.CacheGet(ctx, madsidecar.CacheGetRequest{Key: "quickstart:greeting"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("cache.get: %v (from %s)\n", entry.Value, entry.Source)

	// A lock, owned by this connection: renewed while it is open, released when it closes.
	lock, err := c.LockAcquire(ctx, madsidecar.LockAcquireRequest{Name: "quickstart:job", WaitMs: madsidecar.Int64(2000)})
	if err != nil {
		log.Fatal(err)
	}
	if lock.Acquired {
		fmt.Printf("lock held with fence %d\n", lock.Fence)
		if _, err := c.LockRelease(ctx, madsidecar.LockReleaseRequest{Name: "quickstart:job", Token: lock.Token}); err != nil {
			log.Fatal(err)
		}
	}

	// A rate limit: a denial is a result, not an error.
	hit, err := c.RateLimitHit(ctx, madsidecar.RateLimitHitRequest{Key: "quickstart:ip", Limit: 100, WindowMs: 60_000})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("rate limit: allowed=%v remaining=%d\n", hit.Allowed, hit.Remaining)

	// Pub/sub: messages arrive on the Notifications channel.
	if _, err := c.PubSubSubscribe(ctx, madsidecar.PubSubSubscribeRequest{Channel: "quickstart:news"}); err != nil {
		log.Fatal(err)
	}
	if _, err := c.PubSubPublish(ctx, madsidecar.PubSubPublishRequest{Channel: "quickstart:news", Message: "hi"}); err != nil {
		log.Fatal(err)
	}
wait:
	for n := range c.Notifications() {
		switch p := n.Payload.(type) {
		case *madsidecar.PubSubMessage:
			fmt.Printf("pubsub.message on %s: %v\n", p.Channel, p.Message)
			break wait
		case *madsidecar.LockLost:
			fmt.Printf("lost lock %s (fence %d): stop using it\n", p.Name, p.Fence)
		case *madsidecar.ConnectionLost:
			fmt.Printf("connection lost (%v): its locks and subscriptions are gone\n", p.Err)
		default:
			// other notifications, and names this SDK does not know: ignored
		}
	}

	// Errors compare with errors.Is.
	_, err = c.Call(ctx, "no.such.method", nil)
	fmt.Printf("unknown method is ErrUnknownMethod: %v\n", errors.Is(err, madsidecar.ErrUnknownMethod))
}
