package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/cpvrefresh/cpvrefresh/internal/cli"
	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
)

func manifestFlags(fs *flag.FlagSet, o *opts) {
	fs.StringVar(&o.out, "out", "", "write the manifest to this file (default: standard output)")
	fs.BoolVar(&o.skip, "skip-unpublished", false, "leave out, and list, permissions the partner tenant's resources do not publish (default: refuse)")
}

// runManifest is `worker manifest import <SAMManifest.json>
// [<AdditionalPermissions.json>]`: it reads CIPP's two files as they are,
// resolves every permission against what the resource's service principal
// publishes in the partner tenant (ids and Microsoft's names), and prints
// the manifest (for CPV_MANIFEST_FILE) with the base's consent.
func runManifest(ctx context.Context, e *env) error {
	if len(e.opts.args) < 2 || len(e.opts.args) > 3 || e.opts.args[0] != "import" {
		return cli.Invalid(errors.New("manifest: usage: worker manifest import <SAMManifest.json> [<AdditionalPermissions.json>]"))
	}
	sam, err := os.Open(e.opts.args[1])
	if err != nil {
		return cli.Invalid(fmt.Errorf("manifest import: %w", err))
	}
	defer func() { _ = sam.Close() }() // read only
	var additional io.Reader
	if len(e.opts.args) == 3 {
		f, err := os.Open(e.opts.args[2])
		if err != nil {
			return cli.Invalid(fmt.Errorf("manifest import: %w", err))
		}
		defer func() { _ = f.Close() }() // read only
		additional = f
	}
	req, err := cpv.ReadCIPP(sam, additional)
	if err != nil {
		return cli.Invalid(fmt.Errorf("manifest import: %w", err))
	}
	log, err := newLogger(e)
	if err != nil {
		return cli.Invalid(err)
	}
	_, dir, kv, err := newDirectory(ctx, &e.cfg, microsoftClient(&e.cfg), log)
	if err != nil {
		return cli.Invalid(err)
	}
	defer runVault(ctx, kv)()
	rctx, cancel := context.WithTimeout(ctx, e.cfg.MessageTimeout)
	defer cancel()
	st, err := dir.Read(rctx, e.cfg.PartnerTenantID, e.cfg.ClientID, cpv.ResourceAppIDs(req))
	if err != nil {
		return fmt.Errorf("manifest import: read the resources' service principals in the partner tenant %s: %w", e.cfg.PartnerTenantID, err)
	}
	resources, rerr := cpv.Resolve(req, st.Resources)
	if rerr != nil {
		if !e.opts.skip {
			return cli.Invalid(fmt.Errorf("manifest import: %w\n(--skip-unpublished leaves these out)", rerr))
		}
		fmt.Fprintf(e.stderr, "left out:\n%v\n", rerr)
	}
	m, err := cpv.NewManifest(cpv.DefaultManifest().Consent, resources)
	if err != nil {
		return cli.Invalid(fmt.Errorf("manifest import: %w", err))
	}
	b, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	roles, scopes := m.Counts()
	if e.opts.out == "" {
		_, err = e.stdout.Write(b)
	} else {
		err = os.WriteFile(e.opts.out, b, 0o644)
	}
	if err != nil {
		return fmt.Errorf("manifest import: %w", err)
	}
	fmt.Fprintf(e.stderr, "manifest %s: %d resources, %d app roles, %d delegated scopes\n", m.Version(), len(m.Resources), roles, scopes)
	return nil
}
