#ifndef DTX_TESTS_SUPPORT_CERTIFICATES_HPP
#define DTX_TESTS_SUPPORT_CERTIFICATES_HPP

// Throwaway X.509 certificates made in-process with OpenSSL's API, for the TLS tests and the
// HTTPS benchmark: nothing is written to disk or committed. Keys are P-256 (quick to make).

#include <memory>
#include <stdexcept>
#include <string>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace dtx::test {

template <class T, void (*Free)(T*)>
struct openssl_deleter {
    void operator()(T* p) const noexcept { Free(p); }
};
using key_ptr = std::unique_ptr<EVP_PKEY, openssl_deleter<EVP_PKEY, EVP_PKEY_free>>;
using cert_ptr = std::unique_ptr<X509, openssl_deleter<X509, X509_free>>;

/// A key pair and its certificate, in PEM.
struct identity {
    key_ptr key;
    cert_ptr cert;
    std::string key_pem;
    std::string cert_pem;
};

namespace cert_detail {

inline void check(bool ok, const char* what) {
    if (!ok)
        throw std::runtime_error(std::string("making a test certificate: ") + what + " failed");
}

template <class Write>
std::string pem_of(Write write) {
    std::unique_ptr<BIO, openssl_deleter<BIO, BIO_free_all>> bio(BIO_new(BIO_s_mem()));
    check(bio && write(bio.get()) == 1, "PEM_write_bio");
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(n));
}

inline void add_extension(X509* cert, X509* issuer, int nid, const char* value) {
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    check(ext != nullptr, value);
    const int added = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    check(added == 1, "X509_add_ext");
}

} // namespace cert_detail

/// A certificate for `cn`, valid from `from_days` to `to_days` days from now. With an `issuer`, an
/// end entity for `alt_names` (subjectAltName syntax: "DNS:localhost,IP:127.0.0.1") signed by
/// it; without, a self-signed CA.
inline identity make_identity(const char* cn, const char* alt_names, const identity* issuer,
                              long from_days = -1, long to_days = 30) {
    static long serial = 1;
    identity id;
    id.key.reset(EVP_EC_gen("P-256"));
    cert_detail::check(id.key != nullptr, "EVP_EC_gen");
    id.cert.reset(X509_new());
    X509* x = id.cert.get();
    cert_detail::check(x != nullptr, "X509_new");
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), from_days * 86400);
    X509_gmtime_adj(X509_getm_notAfter(x), to_days * 86400);
    cert_detail::check(X509_set_pubkey(x, id.key.get()) == 1, "X509_set_pubkey");
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>(cn), -1, -1, 0);
    X509* signer = issuer ? issuer->cert.get() : x;
    cert_detail::check(X509_set_issuer_name(x, X509_get_subject_name(signer)) == 1,
                       "X509_set_issuer_name");
    if (issuer) {
        cert_detail::add_extension(x, signer, NID_basic_constraints, "critical,CA:FALSE");
        cert_detail::add_extension(x, signer, NID_subject_alt_name, alt_names);
    } else {
        cert_detail::add_extension(x, signer, NID_basic_constraints, "critical,CA:TRUE");
        cert_detail::add_extension(x, signer, NID_key_usage, "critical,keyCertSign,cRLSign");
    }
    cert_detail::check(X509_sign(x, issuer ? issuer->key.get() : id.key.get(), EVP_sha256()) > 0,
                       "X509_sign");
    EVP_PKEY* key = id.key.get();
    id.key_pem = cert_detail::pem_of([key](BIO* b) {
        return PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr);
    });
    id.cert_pem = cert_detail::pem_of([x](BIO* b) { return PEM_write_bio_X509(b, x); });
    return id;
}

} // namespace dtx::test

#endif
