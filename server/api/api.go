// Package api implements feedgate's connect handlers: MarketDataService,
// ConnectionService and AdminService. Handlers are thin: they validate
// input, call the domain packages and translate domain errors into connect
// codes in one place (errors.go).
package api

import (
	"github.com/feedgate/feedgate/gen/go/feedgate/v1/feedgatev1connect"
)

// MarketData implements feedgatev1connect.MarketDataServiceHandler.
type MarketData struct {
	feedgatev1connect.UnimplementedMarketDataServiceHandler
}

// NewMarketData returns the MarketDataService handler.
func NewMarketData() feedgatev1connect.MarketDataServiceHandler { return &MarketData{} }

// Connection implements feedgatev1connect.ConnectionServiceHandler.
type Connection struct {
	feedgatev1connect.UnimplementedConnectionServiceHandler
}

// NewConnection returns the ConnectionService handler.
func NewConnection() feedgatev1connect.ConnectionServiceHandler { return &Connection{} }

// Admin implements feedgatev1connect.AdminServiceHandler.
type Admin struct {
	feedgatev1connect.UnimplementedAdminServiceHandler
}

// NewAdmin returns the AdminService handler.
func NewAdmin() feedgatev1connect.AdminServiceHandler { return &Admin{} }
