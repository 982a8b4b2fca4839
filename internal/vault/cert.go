package vault

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/cpvrefresh/cpvrefresh/internal/entra"
)

// Defaults of the certificate's renewal, as CIPP renews its SAM
// certificate (Update-CIPPSAMCertificate: 30 days before expiry, a new
// self-signed RSA 2048 certificate valid 365 days).
const (
	DefaultRenewBefore         = 30 * 24 * time.Hour
	DefaultCertificateLifetime = 365 * 24 * time.Hour
)

// certificateKeyBits is the size of a new certificate's RSA key.
const certificateKeyBits = 2048

// rotateCertificate is rotate in certificate mode: the same steps as a
// client secret's, with the app's keyCredentials. A new certificate is
// made when the working one expires within RenewBefore (or when asked),
// registered with addKey, stored as a new version (PEM with its key)
// tagged unproven, proven with a client assertion and marked; after the
// overlap the certificates it replaced are removed with removeKey. Graph
// takes a proof of possession signed with a certificate the app holds for
// both: the working one. Proofs, like the assertions that prove a
// certificate, carry the wall clock's time (Graph checks it against its
// own); the configured clock decides what is due.
func (r *Rotator) rotateCertificate(ctx context.Context, force bool, rep *Report) error {
	st := r.cfg.Store
	name := st.cfg.Names.Certificate
	app, err := r.apps.get(ctx)
	if err != nil {
		return err
	}
	latest, err := st.get(ctx, name, "")
	if err != nil {
		return err
	}

	// 1. A renewal stopped after storing its certificate: prove it now, or
	// give it up when it never worked.
	if latest.Tags[TagState] == StateUnproven {
		data, _, perr := certificate(latest)
		parsed := perr == nil
		if parsed {
			perr = r.prove(ctx, entra.Secret{Version: latest.Version, Certificate: data}, 0)
		}
		if perr != nil {
			if parsed && r.now().Sub(latest.Created) < r.cfg.ProveTimeout {
				return fmt.Errorf("vault: rotation: the new certificate (version %s) is not accepted yet: %w", latest.Version, perr)
			}
			if err := r.tag(ctx, latest, map[string]string{TagState: StateFailed}); err != nil {
				return err
			}
			if k := latest.Tags[TagKeyID]; holdsKey(app, k) {
				signer, _, err := r.workingCertificate(ctx, name)
				if err != nil {
					return err
				}
				if err := r.removeKey(ctx, app.ID, signer, k, nil); err != nil {
					return err
				}
			}
			return fmt.Errorf("vault: rotation: the new certificate (version %s) never worked and was withdrawn: %w", latest.Version, perr)
		}
		if err := r.stop(StepProven); err != nil {
			return err
		}
		if err := r.tag(ctx, latest, map[string]string{TagState: StateProven, TagProven: r.now().UTC().Format(time.RFC3339)}); err != nil {
			return err
		}
		if err := r.stop(StepMarked); err != nil {
			return err
		}
		rep.Outcome = OutcomeCompleted
	}

	signer, working, err := r.workingCertificate(ctx, name)
	if err != nil {
		return err
	}
	props, err := st.versions(ctx, name)
	if err != nil {
		return err
	}

	// 2. Certificates this rotation registered whose key never reached
	// the vault (stopped after addKey): nobody can sign with them.
	stored := storedKeyIDs(props)
	for _, k := range app.Keys {
		if r.ours(k.DisplayName) && !stored[k.KeyID] && k.KeyID != working.Tags[TagKeyID] && thumbprintOf(k) != signer.Thumbprint() {
			if err := r.removeKey(ctx, app.ID, signer, k.KeyID, rep); err != nil {
				return err
			}
		}
	}

	// 3. A new certificate when the working one expires within
	// RenewBefore, or when asked.
	if force || signer.X509().NotAfter.Before(r.now().Add(r.cfg.RenewBefore)) {
		v, next, err := r.addCertificate(ctx, app.ID, name, signer)
		if err != nil {
			return err
		}
		rep.Added, rep.Outcome = v.Tags[TagKeyID], OutcomeRotated
		working, signer = v, next
		if app, err = r.apps.get(ctx); err != nil {
			return err
		}
	}
	if rep.Outcome == "" {
		rep.Outcome = OutcomeUpToDate
	}

	// 4. Old certificates, once the working one has been proven for the
	// overlap.
	return r.removeOldKeys(ctx, app, signer, working, props, rep)
}

// workingCertificate is the vault's usable certificate, parsed.
func (r *Rotator) workingCertificate(ctx context.Context, name string) (*entra.Certificate, Version, error) {
	v, err := r.cfg.Store.Usable(ctx, name)
	if err != nil {
		return nil, Version{}, err
	}
	c, err := parseVersion(v)
	return c, v, err
}

func parseVersion(v Version) (*entra.Certificate, error) {
	data, _, err := certificate(v)
	if err != nil {
		return nil, fmt.Errorf("vault: secret %s version %s: %w", v.Name, v.Version, err)
	}
	c, err := entra.ParseCertificate(data, "")
	if err != nil {
		return nil, fmt.Errorf("vault: secret %s version %s: %w", v.Name, v.Version, err)
	}
	return c, nil
}

// addCertificate makes a certificate, registers it on the app (addKey,
// with a proof signed by signer), stores it as an unproven version, proves
// it and marks it proven.
func (r *Rotator) addCertificate(ctx context.Context, objectID, name string, signer *entra.Certificate) (Version, *entra.Certificate, error) {
	now := r.now().UTC()
	pemText, err := newCertificate(r.cfg.DisplayName, now, r.cfg.CertificateLifetime)
	if err != nil {
		return Version{}, nil, err
	}
	next, err := entra.ParseCertificate([]byte(pemText), "")
	if err != nil {
		return Version{}, nil, err
	}
	proof, err := signer.KeyProof(objectID, time.Now())
	if err != nil {
		return Version{}, nil, err
	}
	k, err := r.apps.addKey(ctx, objectID, r.cfg.DisplayName+" "+now.Format("2006-01-02T15:04:05Z"), next.X509().Raw, proof)
	if err != nil {
		return Version{}, nil, err
	}
	r.log.InfoContext(ctx, "new certificate registered on the app", "key_id", k.KeyID, "thumbprint", next.Thumbprint())
	if err := r.stop(StepAdded); err != nil {
		return Version{}, nil, err
	}
	tags := map[string]*string{
		TagState: to.Ptr(StateUnproven), TagKeyID: to.Ptr(k.KeyID), TagExpires: to.Ptr(next.X509().NotAfter.UTC().Format(time.RFC3339)),
		TagThumbprint: to.Ptr(next.Thumbprint()),
	}
	resp, err := r.cfg.Store.client.SetSecret(ctx, name, azsecrets.SetSecretParameters{
		Value: to.Ptr(pemText), ContentType: to.Ptr("application/x-pem-file"), Tags: tags}, nil)
	if err != nil {
		return Version{}, nil, vaultError("write", name, err)
	}
	v := fromSecret(name, resp.Secret)
	if err := r.stop(StepStored); err != nil {
		return Version{}, nil, err
	}
	if err := r.prove(ctx, entra.Secret{Version: v.Version, Certificate: []byte(pemText)}, r.cfg.ProveTimeout); err != nil {
		// Left unproven: the next run proves it or withdraws it.
		return Version{}, nil, fmt.Errorf("vault: rotation: the new certificate (version %s) is not accepted: %w", v.Version, err)
	}
	if err := r.stop(StepProven); err != nil {
		return Version{}, nil, err
	}
	proven := r.now().UTC().Format(time.RFC3339)
	if err := r.tag(ctx, v, map[string]string{TagState: StateProven, TagProven: proven}); err != nil {
		return Version{}, nil, err
	}
	if err := r.stop(StepMarked); err != nil {
		return Version{}, nil, err
	}
	v.Tags[TagState], v.Tags[TagProven] = StateProven, proven
	return v, next, nil
}

// removeOldKeys removes the app's certificates the rotation replaced: its
// own, and those an older vault version held, once the working one has
// been proven for the overlap; expired ones at once. The working
// certificate stays, and so do certificates the vault never held.
func (r *Rotator) removeOldKeys(ctx context.Context, app application, signer *entra.Certificate, working Version, props []Props, rep *Report) error {
	now := r.now()
	keep, keepThumb := working.Tags[TagKeyID], signer.Thumbprint()
	old := map[string]bool{} // key ids and thumbprints of older versions
	read := 0
	for i := len(props) - 1; i >= 0; i-- {
		p := props[i]
		if p.Version == working.Version {
			continue
		}
		if k := p.Tags[TagKeyID]; k != "" {
			old[k] = true
			old[p.Tags[TagThumbprint]] = true
			continue
		}
		if read >= maxOldVersions || !p.Enabled {
			continue
		}
		read++
		v, err := r.cfg.Store.get(ctx, working.Name, p.Version)
		if err != nil {
			return err
		}
		if c, err := parseVersion(v); err == nil {
			old[c.Thumbprint()] = true
		}
	}
	delete(old, "")
	due := provenAt(working).Add(r.cfg.Overlap)
	exp := signer.X509().NotAfter.UTC()
	rep.Expires = &exp
	for _, k := range app.Keys {
		thumb := thumbprintOf(k)
		if k.KeyID == keep || thumb == keepThumb {
			continue
		}
		replaced := r.ours(k.DisplayName) || old[k.KeyID] || old[thumb]
		switch {
		case !k.End.IsZero() && k.End.Before(now):
		case !replaced:
			continue
		case now.Before(due):
			rep.NextCheck = &due
			continue
		}
		if err := r.removeKey(ctx, app.ID, signer, k.KeyID, rep); err != nil {
			return err
		}
	}
	rep.Version = working.Version
	at := provenAt(working)
	rep.Rotated = &at
	return nil
}

// removeKey removes a certificate from the app with a proof signed by
// signer; rep (nil: none) records it.
func (r *Rotator) removeKey(ctx context.Context, objectID string, signer *entra.Certificate, keyID string, rep *Report) error {
	proof, err := signer.KeyProof(objectID, time.Now())
	if err != nil {
		return err
	}
	if err := r.apps.removeKey(ctx, objectID, keyID, proof); err != nil {
		return err
	}
	r.log.InfoContext(ctx, "old certificate removed from the app", "key_id", keyID)
	if rep == nil {
		return nil
	}
	rep.Removed = append(rep.Removed, keyID)
	return r.stop(StepRemoved)
}

func holdsKey(app application, keyID string) bool {
	for _, k := range app.Keys {
		if keyID != "" && k.KeyID == keyID {
			return true
		}
	}
	return false
}

// thumbprintOf is a key credential's SHA-1 thumbprint in upper-case hex
// ("" when Graph gave none): customKeyIdentifier holds it as base64 of the
// hash (Graph's binary) or as hex.
func thumbprintOf(k keyCred) string {
	id := strings.TrimSpace(k.CustomKeyIdentifier)
	if len(id) == 40 {
		if _, err := hex.DecodeString(id); err == nil {
			return strings.ToUpper(id)
		}
	}
	if b, err := base64.StdEncoding.DecodeString(id); err == nil && len(b) == 20 {
		return strings.ToUpper(hex.EncodeToString(b))
	}
	return ""
}

// newCertificate makes a self-signed certificate for the app, with a new
// RSA key, valid from a few minutes before now (clock skew) for lifetime:
// PEM text of the certificate and its PKCS #8 key, as Key Vault keeps a
// PEM certificate secret.
func newCertificate(name string, now time.Time, lifetime time.Duration) (string, error) {
	key, err := rsa.GenerateKey(rand.Reader, certificateKeyBits)
	if err != nil {
		return "", fmt.Errorf("vault: new certificate: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return "", fmt.Errorf("vault: new certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name + " SAM " + now.Format("2006-01-02")},
		NotBefore: now.Add(-5 * time.Minute), NotAfter: now.Add(lifetime),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", fmt.Errorf("vault: new certificate: %w", err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", fmt.Errorf("vault: new certificate: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})) +
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})), nil
}

// fixed is an entra.Source of one version, for proving it.
type fixed entra.Secret

func (f fixed) Secret() entra.Secret { return entra.Secret(f) }

func (f fixed) Refused(context.Context, string) (entra.Secret, error) { return entra.Secret(f), nil }
