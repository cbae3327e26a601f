package natsbus

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeSelfSignedCert writes a CA-signed server certificate for 127.0.0.1 and returns the
// paths of the CA certificate, the server certificate and its key.
func writeSelfSignedCert(t *testing.T) (ca, cert, key string) {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "autoif test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(srvKey)
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", srvDER), write("server-key.pem", "EC PRIVATE KEY", keyDER)
}

func TestConnectAuthenticatesAsTheServerRequires(t *testing.T) {
	ca, cert, key := writeSelfSignedCert(t)
	cases := []struct {
		name    string
		server  ServerOptions
		client  Options
		wantErr string
	}{
		{"no auth", ServerOptions{}, Options{}, ""},
		{"token", ServerOptions{Token: "s3cret"}, Options{Token: "s3cret"}, ""},
		{"wrong token", ServerOptions{Token: "s3cret"}, Options{Token: "guess"}, "Authorization Violation"},
		{"missing token", ServerOptions{Token: "s3cret"}, Options{}, "Authorization Violation"},
		{"user and password", ServerOptions{User: "trainer", Password: "pw"}, Options{User: "trainer", Password: "pw"}, ""},
		{"wrong password", ServerOptions{User: "trainer", Password: "pw"}, Options{User: "trainer", Password: "nope"}, "Authorization Violation"},
		{"tls with the server's CA", ServerOptions{TLSCert: cert, TLSKey: key}, Options{TLSCA: ca}, ""},
		{"tls without trusting the CA", ServerOptions{TLSCert: cert, TLSKey: key}, Options{}, "certificate"},
		{"missing creds file", ServerOptions{}, Options{CredsFile: "/nonexistent/user.creds"}, "nats creds"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			tc.server.StoreDir = t.TempDir()
			s, err := StartServer(tc.server)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Shutdown()
			tc.client.URL = s.ClientURL()
			if tc.server.TLSCert != "" {
				tc.client.URL = strings.Replace(tc.client.URL, "nats://", "tls://", 1)
			}
			bus, err := Connect(ctx, tc.client)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("connect: %v", err)
				}
				bus.Close()
				return
			}
			if err == nil {
				bus.Close()
				t.Fatalf("connected, want an error containing %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestEmbeddedServerListensOnLoopbackOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	bus, err := Connect(ctx, Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	addr := bus.Embedded().Addr().(*net.TCPAddr)
	if !addr.IP.IsLoopback() {
		t.Fatalf("embedded server listens on %s, want loopback", addr)
	}
	if got := bus.NC.MaxPayload(); got < 8<<20 {
		t.Fatalf("max payload %d, want room for multi-megabyte Arrow batches", got)
	}
}
