package main

import (
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/xdproxy/xdproxy/internal/config"
	"github.com/xdproxy/xdproxy/proxy"
	"github.com/xdproxy/xdproxy/proxy/admin"
	"github.com/xdproxy/xdproxy/proxy/bgp"
)

// startBGP starts the BGP speaker once the proxy serves (it runs no BGP
// without a bgp block, but a reload may add one), gates its announcements
// on p.Serving, and routes reloads and the admin's /bgp to it.
func startBGP(p *proxy.Proxy, cfg *config.Config, reloader *proxy.FileReloader, adminSrv *admin.Admin, log *slog.Logger) (*bgp.Speaker, error) {
	speaker := bgp.New(p.Serving, log)
	if _, err := speaker.Apply(bgp.FromConfig(cfg)); err != nil {
		speaker.Stop()
		return nil, fmt.Errorf("bgp: %w", err)
	}
	reloader.AlsoApply(func(c *config.Config) ([]string, error) {
		return speaker.Apply(bgp.FromConfig(c))
	})
	if adminSrv != nil {
		adminSrv.SetBGP(speaker)
	}
	return speaker, nil
}

// withdrawBeforeDrain withdraws every route and waits bgp.withdraw_delay
// for the routers to send new flows to the other nodes, still serving
// meanwhile; a second signal ends the wait.
func withdrawBeforeDrain(speaker *bgp.Speaker, sigs <-chan os.Signal, log *slog.Logger) {
	d := speaker.WithdrawAll()
	if d <= 0 {
		return
	}
	log.Info("bgp: routes withdrawn; serving on until withdraw_delay ends", "withdraw_delay", d)
	select {
	case <-time.After(d):
	case sig := <-sigs:
		log.Warn("bgp: withdraw_delay cut short", "signal", sig.String())
	}
}
