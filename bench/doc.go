// Package bench will hold the load generator and the side-by-side harness
// that measures xdproxy against kernel proxies. Not built yet: see the
// README's Status section.
package bench
