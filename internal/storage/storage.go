// Package storage opens what a config.Common names for keeping work and
// results: the queue transport (Storage Queue or Service Bus) and the
// result tables. It authenticates with a managed (or workload) identity
// when a service URL or a Service Bus namespace is set, else with the
// connection strings. Both daemons and the worker's operator commands open
// their storage through it.
package storage

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/cpvrefresh/cpvrefresh/internal/config"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// Options tune what Backend opens; the zero value is the SDKs' defaults.
type Options struct {
	// HTTPClient sends the Storage Queue and table requests (the worker's
	// has an idle connection for every refresh slot); nil for the SDK's.
	HTTPClient *http.Client
	// Visibility is how long a received message stays invisible (Storage
	// Queue) or locked (the lock duration of a Service Bus queue Ensure
	// creates); 0 for the queue's default.
	Visibility time.Duration
	// InteractivePoll is how long an empty interactive queue goes unasked
	// while a run keeps the worker busy; 0 for the default.
	InteractivePoll time.Duration
}

// Backend opens the queue transport and the result tables of one
// configuration, with one credential for both.
type Backend struct {
	cfg        *config.Common
	opts       Options
	credential azcore.TokenCredential // nil when only connection strings are used
}

// New chooses the credential cfg calls for; it makes no request.
func New(cfg *config.Common, opts Options) (*Backend, error) {
	b := &Backend{cfg: cfg, opts: opts}
	if usesIdentity(cfg) {
		cred, err := azidentity.NewDefaultAzureCredential(nil)
		if err != nil {
			return nil, fmt.Errorf("storage identity: %w", err)
		}
		b.credential = cred
	}
	return b, nil
}

// usesIdentity reports whether a service is named by URL or namespace
// rather than by connection string, so a managed identity signs in.
func usesIdentity(cfg *config.Common) bool {
	return cfg.QueueServiceURL != "" || cfg.TableServiceURL != "" || cfg.ServiceBusNamespace != ""
}

// OpenStore opens the result tables, creating them if missing.
func (b *Backend) OpenStore(ctx context.Context) (*store.Store, error) {
	sc := store.Config{TablePrefix: b.cfg.TablePrefix, HTTPClient: b.opts.HTTPClient}
	if b.cfg.TableServiceURL != "" {
		sc.ServiceURL, sc.Credential = b.cfg.TableServiceURL, b.credential
	} else {
		sc.ConnectionString = b.cfg.StorageConnectionString
	}
	return store.New(ctx, sc)
}

// OpenQueue opens the configured transport: Storage Queue (work and poison
// queues) or Service Bus (queue and its dead-letter queue), and the
// interactive queue in front of it unless CPV_INTERACTIVE_QUEUE is "none".
// It makes no request: call Ensure.
func (b *Backend) OpenQueue() (queue.Transport, error) {
	return queue.Open(queue.OpenConfig{
		Transport:                  b.cfg.Transport,
		Queue:                      b.cfg.Queue,
		Interactive:                b.cfg.Interactive(),
		InteractivePoll:            b.opts.InteractivePoll,
		Visibility:                 b.opts.Visibility,
		HTTPClient:                 b.opts.HTTPClient,
		StorageConnectionString:    b.cfg.StorageConnectionString,
		QueueServiceURL:            b.cfg.QueueServiceURL,
		ServiceBusConnectionString: b.cfg.ServiceBusConnection,
		ServiceBusNamespace:        b.cfg.ServiceBusNamespace,
		Credential:                 b.credential,
	})
}

// CloseQueue closes q, waiting at most closeTimeout (a Service Bus
// connection says goodbye to the namespace; a Storage Queue has nothing to
// close). It runs after the daemon's context is done, so it has its own.
func CloseQueue(q queue.Transport) error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	return q.Close(ctx)
}

const closeTimeout = 10 * time.Second
