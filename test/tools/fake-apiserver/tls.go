package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Names every generated server certificate carries; the in-cluster
// service names are there so a client configured as if it ran in a pod
// (https://kubernetes.default.svc) can be pointed here with a hosts entry.
var baseSANs = []string{"127.0.0.1", "::1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}

type tlsFiles struct {
	dir                            string
	caCert, caKey, srvCert, srvKey string
}

func newTLSFiles(dir string) tlsFiles {
	return tlsFiles{dir: dir,
		caCert: filepath.Join(dir, "ca.crt"), caKey: filepath.Join(dir, "ca.key"),
		srvCert: filepath.Join(dir, "server.crt"), srvKey: filepath.Join(dir, "server.key")}
}

// ensureTLS reuses the CA and server certificate in dir when they exist and
// cover every wanted name, so a restarted server keeps the CA that clients
// (and kubeconfigs written earlier) already trust. Otherwise it issues a new
// server certificate, from the existing CA when its key is there.
func ensureTLS(f tlsFiles, extra []string) (tls.Certificate, error) {
	sans := append(append([]string(nil), baseSANs...), extra...)
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return tls.Certificate{}, err
	}
	if cert, err := tls.LoadX509KeyPair(f.srvCert, f.srvKey); err == nil && fileExists(f.caCert) {
		leaf, perr := x509.ParseCertificate(cert.Certificate[0])
		if perr == nil && covers(leaf, sans) && time.Now().Before(leaf.NotAfter) {
			return cert, nil
		}
	}
	var ca *x509.Certificate
	var caKey *ecdsa.PrivateKey
	if fileExists(f.caCert) && fileExists(f.caKey) {
		var err error
		ca, caKey, err = loadCA(f)
		if err != nil {
			return tls.Certificate{}, err
		}
	} else {
		var err error
		ca, caKey, err = newCA(f)
		if err != nil {
			return tls.Certificate{}, err
		}
	}
	return newServerCert(f, ca, caKey, sans)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func covers(c *x509.Certificate, sans []string) bool {
	for _, s := range sans {
		if c.VerifyHostname(s) != nil {
			return false
		}
	}
	return true
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func newCA(f tlsFiles) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "fake-apiserver-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	if err := writePEM(f.caCert, "CERTIFICATE", der, 0o644); err != nil {
		return nil, nil, err
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	if err := writePEM(f.caKey, "PRIVATE KEY", kb, 0o600); err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func loadCA(f tlsFiles) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	pair, err := tls.LoadX509KeyPair(f.caCert, f.caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("loading CA from %s: %v", f.dir, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, errors.New("CA key is not ECDSA")
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	return cert, key, err
}

func newServerCert(f tlsFiles, ca *x509.Certificate, caKey *ecdsa.PrivateKey, sans []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "fake-apiserver"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, s := range sans {
		if ip := net.ParseIP(s); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, s)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := writePEM(f.srvKey, "PRIVATE KEY", kb, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := writePEM(f.srvCert, "CERTIFICATE", der, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.LoadX509KeyPair(f.srvCert, f.srvKey)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

// writeFileAtomic lets a test poll for a file and never read half of it.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
