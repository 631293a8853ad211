package gateway

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/feedgate/feedgate/server/config"
	"github.com/feedgate/feedgate/server/seal"
	"github.com/feedgate/feedgate/server/store"
)

// sealer builds the token sealer from FEEDGATE_TOKEN_KEY or the key file in
// the data directory, creating the file on a first start. It refuses to
// create a new key when the database already holds sealed tokens: that
// would lose them silently.
func (g *Gateway) sealer(ctx context.Context) (*seal.Sealer, error) {
	if !g.cfg.TokenKey.IsZero() {
		keys, err := config.DecodeTokenKeys(g.cfg.TokenKey)
		if err != nil {
			return nil, fmt.Errorf("FEEDGATE_TOKEN_KEY: %w", err)
		}
		return seal.New(keys...)
	}
	path := filepath.Join(g.cfg.DataDir, seal.KeyFileName)
	k, err := seal.ReadKeyFile(path)
	if errors.Is(err, seal.ErrNoKeyFile) {
		sealed, lerr := g.store.ListConnections(ctx, store.ConnectionFilter{State: store.StateConnected, Limit: 1})
		if lerr != nil {
			return nil, lerr
		}
		if len(sealed) > 0 {
			return nil, fmt.Errorf("the token key file %s is missing but %s holds sealed broker tokens: restore the key file or set FEEDGATE_TOKEN_KEY", path, DBFile)
		}
		k, err = seal.CreateKeyFile(path)
		if err == nil {
			g.opts.Logger.Info("created the token key file", "path", path)
		}
	}
	if err != nil {
		return nil, err
	}
	return seal.New(k)
}
