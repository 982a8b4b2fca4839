package ui_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"golang.org/x/sync/errgroup"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher"
	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher/ui"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// readyProbe runs in every new document before the page's own scripts
// (the DevTools protocol injects it; the page's CSP does not apply) and
// records when the first row of the tenants table is drawn, in ms since
// the navigation started.
const readyProbe = `(() => {
	const look = () => {
		if (window.__ready === undefined && document.querySelector('#tenants-table tbody tr')) window.__ready = performance.now();
	};
	new MutationObserver(look).observe(document, { subtree: true, childList: true });
})()`

// searchProbe types a search into the tenants page's box and resolves when
// every row shown matches it: the time from the keystroke to the rows (the
// page waits 250 ms for more typing before it asks) and the duration of
// the search's request in the browser's resource timing.
const searchProbe = `new Promise((resolve) => {
	const text = %s;
	const input = document.querySelector('#tenant-search');
	performance.clearResourceTimings();
	const t0 = performance.now();
	const done = () => {
		const rows = [...document.querySelectorAll('#tenants-table tbody tr')];
		if (!rows.length || !rows.every((r) => r.textContent.toLowerCase().includes(text))) return false;
		const e = performance.getEntriesByType('resource').filter((x) => x.name.includes('/api/tenants?') && x.name.includes('q='));
		resolve([performance.now() - t0, e.length ? e[e.length - 1].duration : -1]);
		return true;
	};
	const obs = new MutationObserver(() => { if (done()) obs.disconnect(); });
	obs.observe(document.body, { subtree: true, childList: true });
	input.value = text;
	input.dispatchEvent(new Event('input'));
})`

// BenchmarkTenantsPage measures the tenants page in headless Chromium over
// a fleet in Azurite (1,000 tenants; BENCH_FULL=1 makes it 10,000), with
// the dispatcher's fleet index warm (the scheduler reads it at start):
//
//   - ready: from the start of a navigation to the first rows of the table
//     drawn (the rows do not wait for the run's progress, whose answer is
//     waited for after), with the page's assets in the browser's cache (cached) and
//     without (cold); it reports the size of the first page's API answer,
//     its duration, and that of the run's progress (GET /api/runs/{id}),
//     which the page asks for at the same time.
//   - search: a search typed into the box, from the keystroke to the rows
//     that match (the page's 250 ms typing pause included) and the
//     search's answer alone.
//
// Timing is measured in the page (performance.now), not by polling it.
func BenchmarkTenantsPage(b *testing.B) {
	n := 1000
	if os.Getenv("BENCH_FULL") == "1" {
		n = 10000
	}
	srv := newPageStack(b, n)
	br := newBrowser(b)
	if _, err := chromedp.Call(br.ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: readyProbe}); err != nil {
		b.Fatal(err)
	}
	// Signed in as the tab would be after the sign-in form: the key in sessionStorage.
	br.do("open the UI", chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#credential")))
	eval[chromedp.Void](br, `sessionStorage.setItem('cpvrefresh.credential', `+js(testAPIKey)+`)`)
	// Each visit and each search comes after the fleet index's 2 s of
	// freshness, so it pays for reading the store's changes, as a person's
	// first look at the page does.
	settle := func() {
		select {
		case <-br.ctx.Done():
		case <-time.After(2500 * time.Millisecond):
		}
	}
	visit := 0
	open := func() {
		visit++
		// A query makes each visit load the document again.
		br.do("open the tenants page", chromedp.Navigate(fmt.Sprintf("%s/?visit=%d#/tenants", srv.URL, visit)))
		br.until("the first rows", `window.__ready !== undefined`, time.Minute)
	}
	open() // the fleet index is read once, as the scheduler does at start

	for _, cold := range []bool{false, true} {
		name := "ready/cached"
		if cold {
			name = "ready/cold"
		}
		b.Run(name, func(b *testing.B) {
			var times, answers, progress []float64
			size := 0
			for b.Loop() {
				b.StopTimer()
				settle()
				if cold {
					if _, err := chromedp.Call(br.ctx, network.ClearBrowserCache, struct{}{}); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				open()
				times = append(times, eval[float64](br, `window.__ready`))
				br.until("the run's progress", `performance.getEntriesByType('resource').some((x) => x.name.includes('/api/runs/'))`, time.Minute)
				first := eval[[]float64](br, `(() => {
					const e = performance.getEntriesByType('resource');
					const list = e.find((x) => x.name.includes('/api/tenants?'));
					const run = e.find((x) => x.name.includes('/api/runs/'));
					return [list ? list.decodedBodySize : -1, list ? list.duration : -1, run ? run.duration : -1];
				})()`)
				size = int(first[0])
				answers, progress = append(answers, first[1]), append(progress, first[2])
			}
			b.ReportMetric(median(times), "ms-ready")
			b.ReportMetric(slices.Max(times), "ms-ready-max")
			b.ReportMetric(float64(size)/1024, "KB-first-answer")
			b.ReportMetric(median(answers), "ms-first-answer")
			b.ReportMetric(median(progress), "ms-run-progress")
			b.ReportMetric(float64(n), "tenants")
		})
	}
	b.Run("search", func(b *testing.B) {
		var shown, answer []float64
		for b.Loop() {
			b.StopTimer()
			open()
			settle()
			b.StartTimer()
			v, err := chromedp.Run(br.ctx, chromedp.Evaluate[[]float64](fmt.Sprintf(searchProbe, js("consent case 2")), chromedp.EvalAwaitPromise))
			if err != nil || len(v) != 2 {
				b.Fatalf("search: %v, %v", v, err)
			}
			shown, answer = append(shown, v[0]), append(answer, v[1])
		}
		b.ReportMetric(median(answer), "ms-answer")
		b.ReportMetric(median(shown), "ms-shown")
		b.ReportMetric(float64(n), "tenants")
	})
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// newPageStack is a dispatcher with its UI over a fleet of n tenants in
// Azurite (a fifth of them failed, a fifth never refreshed) and last
// night's run of them, and no worker.
func newPageStack(tb testing.TB, n int) *httptest.Server {
	tb.Helper()
	ctx := context.Background()
	az := testenv.Azurite(tb)
	q, err := queue.NewStorageQueue(queue.StorageQueueConfig{ConnectionString: az.ConnectionString, Queue: testenv.Name("pageq"), Visibility: 5 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	if err := q.Ensure(ctx); err != nil {
		tb.Fatal(err)
	}
	st, err := store.New(ctx, store.Config{ConnectionString: az.ConnectionString, TablePrefix: testenv.Name("page")})
	if err != nil {
		tb.Fatal(err)
	}
	states := []cpvtype.Status{cpvtype.StatusSucceeded, cpvtype.StatusFailed, cpvtype.StatusPartial, "", cpvtype.StatusSucceeded}
	at := time.Now().UTC().Add(-time.Hour)
	// Last night's run, whose progress the page shows above the table.
	run := store.Run{ID: "nightly-page-bench", Kind: dispatcher.KindNightly, Scheduled: at, Started: at, Finished: at.Add(time.Minute),
		Enqueued: n, Total: n}
	if err := st.CreateRun(ctx, run); err != nil {
		tb.Fatal(err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range n {
		id := fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
		g.Go(func() error {
			if err := st.AddTenant(gctx, store.Tenant{ID: id, DisplayName: fmt.Sprintf("Contoso %05d", i),
				DefaultDomain: fmt.Sprintf("contoso%d.onmicrosoft.com", i), RelationshipStatus: "active"}); err != nil {
				return err
			}
			s := states[i%len(states)]
			if s == "" {
				return nil
			}
			row := store.Status{TenantID: id, State: s, RunID: run.ID, LastAttempt: at.Add(time.Duration(i%60) * time.Second), AppRolesApplied: 70,
				AppRolesTotal: 70, DelegatedApplied: 108, DelegatedTotal: 108, ManifestVersion: "v1"}
			if s == cpvtype.StatusFailed {
				row.LastError = fmt.Sprintf("AADSTS65001: consent case %d: the user or administrator has not consented to use the application", i%4)
				row.Advice = "Consent is missing: run a CPV reset of the tenant."
			}
			return st.PutStatus(gctx, row)
		})
	}
	if err := g.Wait(); err != nil {
		tb.Fatal(err)
	}
	d, err := dispatcher.New(dispatcher.Config{ID: "dispatcher-page-bench", Store: st, Queue: q, APIKeys: []string{testAPIKey},
		UI: ui.Handler(), Logger: testLogger()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(d.Close)
	srv := httptest.NewServer(d.Handler())
	tb.Cleanup(srv.Close)
	return srv
}
