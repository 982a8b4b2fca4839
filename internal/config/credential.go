package config

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/vault"
)

// VaultNames are the Key Vault secret names configured.
func (c *Common) VaultNames() vault.Names {
	return vault.Names{ApplicationID: c.SecretNameAppID, ApplicationSecret: c.SecretNameAppSecret,
		RefreshToken: c.SecretNameRefreshToken, Certificate: c.SecretNameCertificate, Rotation: c.SecretNameRotation}
}

// AppCredential builds the partner app's credential. With
// CPV_KEY_VAULT_URL it loads the credential from Key Vault first (and the
// app's client id from it when CPV_CLIENT_ID is empty); the store returned
// must then run (Store.Run) for the life of the process, to pick up new
// versions and write rotated refresh tokens. Without a vault the store is
// nil and rotated refresh tokens are kept in memory only.
func (c *Common) AppCredential(ctx context.Context, hc *http.Client, log *slog.Logger) (azcore.TokenCredential, *vault.Store, error) {
	onRotate := func(string) { log.Debug("refresh token rotated") } // never the token itself
	if c.KeyVaultURL == "" {
		cred, err := entra.NewCredential(c.Credential(hc, onRotate))
		return cred, nil, err
	}
	id, err := vault.NewIdentity(vault.IdentityConfig{ClientID: c.KeyVaultClientID, ClientSecret: c.KeyVaultClientSecret,
		TenantID: c.PartnerTenantID, AuthorityHost: c.AuthorityHost, HTTPClient: hc})
	if err != nil {
		return nil, nil, err
	}
	st, err := vault.New(vault.Config{URL: c.KeyVaultURL, Credential: id, Transport: hc, VerifyChallenge: c.KeyVaultVerifyChallenge,
		Mode: c.AuthMode, Names: c.VaultNames(), Poll: c.KeyVaultPoll, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	if err := st.Load(ctx); err != nil {
		return nil, nil, fmt.Errorf("credential from Key Vault: %w", err)
	}
	if c.ClientID == "" {
		c.ClientID = st.ClientID()
		if !cpvtype.IsGUID(c.ClientID) {
			return nil, nil, fmt.Errorf("CPV_CLIENT_ID is empty and the Key Vault's %s secret holds no GUID", c.SecretNameAppID)
		}
	}
	ec := c.Credential(hc, st.SaveRefreshToken)
	ec.Source = st
	cred, err := entra.NewCredential(ec)
	if err != nil {
		return nil, nil, err
	}
	log.Info("credential loaded from Key Vault", "kind", st.Info().Kind, "version", st.Info().Version)
	return cred, st, nil
}
