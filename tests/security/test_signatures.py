"""The signature primitive against published vectors, other JOSE libraries and bad inputs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jws as jwcrypto_jws

from scenarios.finance import transaction_payloads
from security.errors import Rejection, UnsupportedAlgorithm, UnusableKey
from security.keyfiles import generate_key
from security.reasons import RejectReason
from security.registry import KeyRecord
from security.signatures import b64url_decode, b64url_encode, canonical_alg, verify
from security.verification import VerificationPolicy, verify_event

P256_ORDER = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)

# --------------------------------------------------------------------------------------------
# RFC 8032 section 7.1: Ed25519 test vectors (secret key, public key, message, signature).
# --------------------------------------------------------------------------------------------

_RFC8032_TEST_1024_MESSAGE = (
    "08b8b2b733424243760fe426a4b54908632110a66c2f6591eabd3345e3e4eb98"
    "fa6e264bf09efe12ee50f8f54e9f77b1e355f6c50544e23fb1433ddf73be84d8"
    "79de7c0046dc4996d9e773f4bc9efe5738829adb26c81b37c93a1b270b20329d"
    "658675fc6ea534e0810a4432826bf58c941efb65d57a338bbd2e26640f89ffbc"
    "1a858efcb8550ee3a5e1998bd177e93a7363c344fe6b199ee5d02e82d522c4fe"
    "ba15452f80288a821a579116ec6dad2b3b310da903401aa62100ab5d1a36553e"
    "06203b33890cc9b832f79ef80560ccb9a39ce767967ed628c6ad573cb116dbef"
    "efd75499da96bd68a8a97b928a8bbc103b6621fcde2beca1231d206be6cd9ec7"
    "aff6f6c94fcd7204ed3455c68c83f4a41da4af2b74ef5c53f1d8ac70bdcb7ed1"
    "85ce81bd84359d44254d95629e9855a94a7c1958d1f8ada5d0532ed8a5aa3fb2"
    "d17ba70eb6248e594e1a2297acbbb39d502f1a8c6eb6f1ce22b3de1a1f40cc24"
    "554119a831a9aad6079cad88425de6bde1a9187ebb6092cf67bf2b13fd65f270"
    "88d78b7e883c8759d2c4f5c65adb7553878ad575f9fad878e80a0c9ba63bcbcc"
    "2732e69485bbc9c90bfbd62481d9089beccf80cfe2df16a2cf65bd92dd597b07"
    "07e0917af48bbb75fed413d238f5555a7a569d80c3414a8d0859dc65a46128ba"
    "b27af87a71314f318c782b23ebfe808b82b0ce26401d2e22f04d83d1255dc51a"
    "ddd3b75a2b1ae0784504df543af8969be3ea7082ff7fc9888c144da2af58429e"
    "c96031dbcad3dad9af0dcbaaaf268cb8fcffead94f3c7ca495e056a9b47acdb7"
    "51fb73e666c6c655ade8297297d07ad1ba5e43f1bca32301651339e22904cc8c"
    "42f58c30c04aafdb038dda0847dd988dcda6f3bfd15c4b4c4525004aa06eeff8"
    "ca61783aacec57fb3d1f92b0fe2fd1a85f6724517b65e614ad6808d6f6ee34df"
    "f7310fdc82aebfd904b01e1dc54b2927094b2db68d6f903b68401adebf5a7e08"
    "d78ff4ef5d63653a65040cf9bfd4aca7984a74d37145986780fc0b16ac451649"
    "de6188a7dbdf191f64b5fc5e2ab47b57f7f7276cd419c17a3ca8e1b939ae49e4"
    "88acba6b965610b5480109c8b17b80e1b7b750dfc7598d5d5011fd2dcc5600a3"
    "2ef5b52a1ecc820e308aa342721aac0943bf6686b64b2579376504ccc493d97e"
    "6aed3fb0f9cd71a43dd497f01f17c0e2cb3797aa2a2f256656168e6c496afc5f"
    "b93246f6b1116398a346f1a641f3b041e989f7914f90cc2c7fff357876e506b5"
    "0d334ba77c225bc307ba537152f3f1610e4eafe595f6d9d90d11faa933a15ef1"
    "369546868a7f3a45a96768d40fd9d03412c091c6315cf4fde7cb68606937380d"
    "b2eaaa707b4c4185c32eddcdd306705e4dc1ffc872eeee475a64dfac86aba41c"
    "0618983f8741c5ef68d3a101e8a3b8cac60c905c15fc910840b94c00a0b9d0"
)

RFC8032_VECTORS = [
    pytest.param(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        id="TEST-1-empty",
    ),
    pytest.param(
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        id="TEST-2",
    ),
    pytest.param(
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        id="TEST-3",
    ),
    pytest.param(
        "f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5",
        "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e",
        _RFC8032_TEST_1024_MESSAGE,
        "0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350"
        "aa5371b1508f9f4528ecea23c436d94b5e8fcd4f681e30a6ac00a9704a188a03",
        id="TEST-1024",
    ),
]


def okp_jwk(public_key: bytes) -> dict[str, str]:
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(public_key)}


def ec_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = public_key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url_encode(numbers.x.to_bytes(32, "big")),
        "y": b64url_encode(numbers.y.to_bytes(32, "big")),
    }


def flip_bit(data: bytes, index: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032_VECTORS)
def test_rfc8032_vector_is_transcribed_exactly(secret, public, message, signature):
    # Ed25519 is deterministic: the secret key must give the RFC's public key and signature.
    private = ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
    raw_public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert raw_public.hex() == public
    assert private.sign(bytes.fromhex(message)).hex() == signature


def test_rfc8032_test_1024_message_has_1023_bytes():
    assert len(bytes.fromhex(_RFC8032_TEST_1024_MESSAGE)) == 1023


@pytest.mark.parametrize("alg", ["Ed25519", "EdDSA"])
@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032_VECTORS)
def test_rfc8032_vector_verifies(alg, secret, public, message, signature):
    jwk = okp_jwk(bytes.fromhex(public))
    assert verify(alg, jwk, bytes.fromhex(message), bytes.fromhex(signature)) is True


@pytest.mark.parametrize("alg", ["Ed25519", "EdDSA"])
@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032_VECTORS)
def test_rfc8032_vector_with_flipped_message_bit_is_false(alg, secret, public, message, signature):
    jwk = okp_jwk(bytes.fromhex(public))
    msg = bytes.fromhex(message)
    tampered = flip_bit(msg, len(msg) // 2) if msg else b"\x00"
    assert verify(alg, jwk, tampered, bytes.fromhex(signature)) is False


@pytest.mark.parametrize(("index", "bit"), [(0, 0), (31, 7), (32, 0), (63, 3), (63, 7)])
@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032_VECTORS)
def test_rfc8032_vector_with_flipped_signature_bit_is_false(
    index, bit, secret, public, message, signature
):
    jwk = okp_jwk(bytes.fromhex(public))
    tampered = flip_bit(bytes.fromhex(signature), index, bit)
    assert verify("Ed25519", jwk, bytes.fromhex(message), tampered) is False


def test_rfc8032_signature_does_not_verify_under_another_vectors_key():
    (_, _, msg1, sig1), (_, pub2, _, _) = (v.values for v in RFC8032_VECTORS[:2])
    assert verify("Ed25519", okp_jwk(bytes.fromhex(pub2)), bytes.fromhex(msg1),
                  bytes.fromhex(sig1)) is False


@pytest.mark.parametrize("length", [0, 63, 65, 128])
def test_ed25519_signature_of_wrong_length_is_false(length):
    _, public, message, signature = RFC8032_VECTORS[1].values
    sig = (bytes.fromhex(signature) * 2)[:length]
    assert verify("Ed25519", okp_jwk(bytes.fromhex(public)), bytes.fromhex(message), sig) is False


def test_ed25519_signature_with_s_plus_group_order_is_false():
    # s + L encodes the same scalar mod L; RFC 8032 requires s < L, so this must not verify.
    group_order = 2**252 + 27742317777372353535851937790883648493
    _, public, message, signature = RFC8032_VECTORS[2].values
    sig = bytes.fromhex(signature)
    s = int.from_bytes(sig[32:], "little") + group_order
    assert s < 2**256
    malleated = sig[:32] + s.to_bytes(32, "little")
    assert verify("Ed25519", okp_jwk(bytes.fromhex(public)), bytes.fromhex(message),
                  malleated) is False


# --------------------------------------------------------------------------------------------
# RFC 8037 appendix A.4 (Ed25519 JWS) and RFC 7515 appendix A.3 (ES256 JWS).
# --------------------------------------------------------------------------------------------

RFC8037_JWK = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
RFC8037_TOKEN = (
    "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
)

RFC7515_A3_JWK = {
    "kty": "EC",
    "crv": "P-256",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
}
RFC7515_A3_TOKEN = (
    "eyJhbGciOiJFUzI1NiJ9."
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0"
    "cnVlfQ."
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
)


def split_token(token: str) -> tuple[bytes, bytes, bytes]:
    header, payload, signature = token.split(".")
    return f"{header}.{payload}".encode("ascii"), b64url_decode(payload), b64url_decode(signature)


def test_rfc8037_key_is_the_rfc8032_test_1_key():
    assert b64url_decode(RFC8037_JWK["x"]).hex() == RFC8032_VECTORS[0].values[1]


def test_rfc8037_a4_token_parts_are_the_published_ones():
    header, payload, _ = RFC8037_TOKEN.split(".")
    assert json.loads(b64url_decode(header)) == {"alg": "EdDSA"}
    assert b64url_decode(payload) == b"Example of Ed25519 signing"


@pytest.mark.parametrize("alg", ["EdDSA", "Ed25519"])
def test_rfc8037_a4_jws_verifies(alg):
    signing_input, _, signature = split_token(RFC8037_TOKEN)
    assert verify(alg, RFC8037_JWK, signing_input, signature) is True


def test_rfc8037_a4_jws_with_other_payload_is_false():
    _, _, signature = split_token(RFC8037_TOKEN)
    other = b"eyJhbGciOiJFZERTQSJ9." + b64url_encode(b"Example of Ed25519 signinG").encode()
    assert verify("EdDSA", RFC8037_JWK, other, signature) is False


def test_rfc7515_a3_es256_jws_verifies():
    signing_input, payload, signature = split_token(RFC7515_A3_TOKEN)
    assert payload.startswith(b'{"iss":"joe",\r\n')
    assert len(signature) == 64
    assert verify("ES256", RFC7515_A3_JWK, signing_input, signature) is True


@pytest.mark.parametrize("index", [0, 31, 32, 63])
def test_rfc7515_a3_es256_with_flipped_signature_bit_is_false(index):
    signing_input, _, signature = split_token(RFC7515_A3_TOKEN)
    assert verify("ES256", RFC7515_A3_JWK, signing_input, flip_bit(signature, index)) is False


def test_rfc7515_a3_es256_with_flipped_message_bit_is_false():
    signing_input, _, signature = split_token(RFC7515_A3_TOKEN)
    tampered = flip_bit(signing_input, len(signing_input) - 1, 1)
    assert verify("ES256", RFC7515_A3_JWK, tampered, signature) is False


# --------------------------------------------------------------------------------------------
# ES256 with keys made by ``cryptography``: raw r||s only, every other shape is False.
# --------------------------------------------------------------------------------------------

MESSAGE = b"eyJhbGciOiJFUzI1NiJ9.eyJoZWxsbyI6IndvcmxkIn0"


@pytest.fixture(scope="module")
def p256_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def p256_der_signature(p256_key) -> bytes:
    return p256_key.sign(MESSAGE, ec.ECDSA(hashes.SHA256()))


def raw_rs(r: int, s: int) -> bytes:
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


@pytest.fixture(scope="module")
def p256_raw_signature(p256_der_signature) -> bytes:
    return raw_rs(*decode_dss_signature(p256_der_signature))


def test_es256_raw_signature_verifies(p256_key, p256_raw_signature):
    assert verify("ES256", ec_jwk(p256_key.public_key()), MESSAGE, p256_raw_signature) is True


def test_es256_many_fresh_signatures_verify():
    # Covers r or s with leading zero bytes, which must still be left-padded to 32 bytes.
    for _ in range(50):
        key = ec.generate_private_key(ec.SECP256R1())
        sig = raw_rs(*decode_dss_signature(key.sign(MESSAGE, ec.ECDSA(hashes.SHA256()))))
        assert verify("ES256", ec_jwk(key.public_key()), MESSAGE, sig) is True


def test_es256_der_signature_is_false(p256_key, p256_der_signature):
    assert verify("ES256", ec_jwk(p256_key.public_key()), MESSAGE, p256_der_signature) is False


def test_es256_signature_of_other_message_is_false(p256_key, p256_raw_signature):
    jwk = ec_jwk(p256_key.public_key())
    assert verify("ES256", jwk, MESSAGE + b"x", p256_raw_signature) is False


def test_es256_signature_under_other_key_is_false(p256_raw_signature):
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert verify("ES256", ec_jwk(other), MESSAGE, p256_raw_signature) is False


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda sig: sig[:63], id="63-bytes-truncated"),
        pytest.param(lambda sig: sig[1:], id="63-bytes-head-cut"),
        pytest.param(lambda sig: sig + b"\x00", id="65-bytes-trailing-zero"),
        pytest.param(lambda sig: b"\x00" + sig, id="65-bytes-leading-zero"),
        pytest.param(lambda sig: b"", id="empty"),
        pytest.param(lambda sig: sig + sig, id="128-bytes"),
    ],
)
def test_es256_signature_of_wrong_length_is_false(p256_key, p256_raw_signature, mangle):
    jwk = ec_jwk(p256_key.public_key())
    assert verify("ES256", jwk, MESSAGE, mangle(p256_raw_signature)) is False


@pytest.mark.parametrize(
    "replace",
    [
        pytest.param(lambda r, s: (0, s), id="r=0"),
        pytest.param(lambda r, s: (r, 0), id="s=0"),
        pytest.param(lambda r, s: (0, 0), id="r=s=0"),
        pytest.param(lambda r, s: (P256_ORDER, s), id="r=n"),
        pytest.param(lambda r, s: (r, P256_ORDER), id="s=n"),
        pytest.param(lambda r, s: (P256_ORDER + 1, s), id="r=n+1"),
        pytest.param(lambda r, s: (2**256 - 1, s), id="r=2^256-1"),
        pytest.param(lambda r, s: (r, 2**256 - 1), id="s=2^256-1"),
    ],
)
def test_es256_out_of_range_r_or_s_is_false(p256_key, p256_der_signature, replace):
    r, s = decode_dss_signature(p256_der_signature)
    sig = raw_rs(*replace(r, s))
    assert verify("ES256", ec_jwk(p256_key.public_key()), MESSAGE, sig) is False


# --------------------------------------------------------------------------------------------
# Algorithms and keys that are refused with an exception, not a False.
# --------------------------------------------------------------------------------------------

_OKP = okp_jwk(bytes.fromhex(RFC8032_VECTORS[0].values[1]))


@pytest.mark.parametrize(
    "alg",
    ["none", "None", "HS256", "RS256", "PS256", "ES384", "ES512", "ES256K", "Ed448", "",
     "ed25519", "es256", "EDDSA", " Ed25519", "Ed25519 "],
)
@pytest.mark.parametrize("jwk", [_OKP, RFC7515_A3_JWK], ids=["okp", "ec"])
def test_unsupported_algorithm_raises(alg, jwk):
    with pytest.raises(UnsupportedAlgorithm):
        verify(alg, jwk, b"message", b"\x00" * 64)


@pytest.mark.parametrize("alg", ["none", "HS256", "RS256", "ES384", ""])
def test_canonical_alg_refuses_unsupported(alg):
    with pytest.raises(UnsupportedAlgorithm):
        canonical_alg(alg)


@pytest.mark.parametrize(
    ("alg", "expected"), [("Ed25519", "Ed25519"), ("EdDSA", "Ed25519"), ("ES256", "ES256")]
)
def test_canonical_alg_names(alg, expected):
    assert canonical_alg(alg) == expected


@pytest.mark.parametrize(
    ("alg", "jwk"),
    [
        pytest.param("ES256", _OKP, id="okp-key-with-es256"),
        pytest.param("Ed25519", RFC7515_A3_JWK, id="ec-key-with-ed25519"),
        pytest.param("EdDSA", RFC7515_A3_JWK, id="ec-key-with-eddsa"),
        pytest.param("Ed25519", {**_OKP, "x": b64url_encode(b"\x01" * 31)}, id="x-31-bytes"),
        pytest.param("Ed25519", {**_OKP, "x": b64url_encode(b"\x01" * 33)}, id="x-33-bytes"),
        pytest.param("Ed25519", {**_OKP, "x": _OKP["x"] + "="}, id="x-padded"),
        pytest.param("Ed25519", {**_OKP, "x": "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
                     id="x-standard-alphabet"),
        pytest.param("Ed25519", {"kty": "OKP", "crv": "Ed25519"}, id="x-missing"),
        pytest.param("Ed25519", {**_OKP, "x": 12345}, id="x-not-a-string"),
        pytest.param("Ed25519", {**_OKP, "crv": "X25519"}, id="okp-x25519"),
        pytest.param("Ed25519", {**_OKP, "crv": "Ed448"}, id="okp-ed448"),
        pytest.param("Ed25519", {**_OKP, "kty": "EC"}, id="kty-ec-crv-ed25519"),
        pytest.param("Ed25519", {"crv": "Ed25519", "x": _OKP["x"]}, id="kty-missing"),
        pytest.param("ES256", {**RFC7515_A3_JWK, "crv": "P-384"}, id="ec-p384"),
        pytest.param("ES256", {**RFC7515_A3_JWK, "kty": "OKP"}, id="kty-okp-crv-p256"),
        pytest.param("ES256", {k: v for k, v in RFC7515_A3_JWK.items() if k != "y"},
                     id="y-missing"),
        pytest.param("ES256", {**RFC7515_A3_JWK, "x": b64url_encode(b"\x01" * 31)},
                     id="ec-x-31-bytes"),
        pytest.param("ES256", {**RFC7515_A3_JWK, "y": b64url_encode(b"\x01" * 33)},
                     id="ec-y-33-bytes"),
        pytest.param("ES256", {**RFC7515_A3_JWK, "y": b64url_encode(
            (int.from_bytes(b64url_decode(RFC7515_A3_JWK["y"]), "big") + 1).to_bytes(32, "big")
        )}, id="ec-point-not-on-curve"),
        pytest.param("ES256", {**RFC7515_A3_JWK, "x": b64url_encode(bytes(32)),
                               "y": b64url_encode(bytes(32))}, id="ec-point-zero"),
    ],
)
def test_unusable_key_raises(alg, jwk):
    with pytest.raises(UnusableKey):
        verify(alg, jwk, b"message", b"\x01" * 64)


def test_unusable_key_raises_even_for_a_signature_of_wrong_length():
    with pytest.raises(UnusableKey):
        verify("ES256", _OKP, b"message", b"")


def test_extra_jwk_members_do_not_change_the_answer():
    signing_input, _, signature = split_token(RFC8037_TOKEN)
    jwk = {**RFC8037_JWK, "kid": "k", "alg": "EdDSA", "use": "sig", "y": "ignored", "d": None}
    assert verify("Ed25519", jwk, signing_input, signature) is True


# --------------------------------------------------------------------------------------------
# Strict base64url.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\x00", b"\xfb\xff", b"\xfb\xff\xbf", bytes(range(256))])
def test_b64url_round_trip(data):
    encoded = b64url_encode(data)
    assert "=" not in encoded and "+" not in encoded and "/" not in encoded
    assert b64url_decode(encoded) == data
    assert b64url_decode(encoded.encode("ascii")) == data


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("QQ==", id="padding"),
        pytest.param("QQ=", id="partial-padding"),
        pytest.param("-_8=", id="padding-urlsafe"),
        pytest.param("+_8", id="plus"),
        pytest.param("-/8", id="slash"),
        pytest.param("QU JD", id="space"),
        pytest.param("QUJD\n", id="newline"),
        pytest.param("QUJ!", id="bang"),
        pytest.param("Q", id="length-1-mod-4"),
        pytest.param("QR", id="non-canonical-trailing-bits"),
        pytest.param("QUJ", id="non-canonical-trailing-bits-3"),
        pytest.param("QUJDé", id="non-ascii-text"),
        pytest.param(b"QUJD\xc3\xa9", id="non-ascii-bytes"),
    ],
)
def test_b64url_decode_refuses(text):
    with pytest.raises(ValueError):
        b64url_decode(text)


# --------------------------------------------------------------------------------------------
# Interoperability: tokens from jwcrypto verify through the whole pipeline, and the project's
# own tokens (signed with joserfc) verify with jwcrypto.
# --------------------------------------------------------------------------------------------

INTEROP_NOW = datetime(2025, 6, 1, 9, 30, tzinfo=UTC)
INTEROP_POLICY = VerificationPolicy(
    max_event_bytes=64 * 1024,
    max_clock_skew=timedelta(seconds=300),
    accepted_types=frozenset({"attest.transaction.v1"}),
)


def jwcrypto_token(key: jwcrypto_jwk.JWK, alg: str, kid: str, payload: bytes) -> bytes:
    token = jwcrypto_jws.JWS(payload)
    protected = {"alg": alg, "kid": kid, "typ": "attest.transaction.v1"}
    token.add_signature(key, None, protected=protected)
    return token.serialize(compact=True).encode("ascii")


@pytest.mark.parametrize(
    ("alg", "params", "registered_alg"),
    [
        ("EdDSA", {"kty": "OKP", "crv": "Ed25519"}, "Ed25519"),
        ("Ed25519", {"kty": "OKP", "crv": "Ed25519"}, "Ed25519"),
        ("ES256", {"kty": "EC", "crv": "P-256"}, "ES256"),
    ],
)
def test_jwcrypto_token_verifies_through_verify_event(alg, params, registered_alg):
    kid = f"core-ledger-jwcrypto-{alg.lower()}"
    key = jwcrypto_jwk.JWK.generate(kid=kid, **params)
    payload = transaction_payloads(1, "core-ledger", seed=11, now=INTEROP_NOW)[0]
    raw = jwcrypto_token(key, alg, kid, json.dumps(payload).encode("utf-8"))
    record = KeyRecord(kid=kid, source="core-ledger", alg=registered_alg,
                       public_jwk=key.export_public(as_dict=True))

    event = verify_event(raw, {kid: record}, INTEROP_NOW, INTEROP_POLICY)

    assert event.kid == kid
    assert event.alg == registered_alg
    assert event.source == "core-ledger"
    assert event.typ == "attest.transaction.v1"
    assert event.event_id == payload["event_id"]
    assert event.payload == payload
    assert event.issued_at == INTEROP_NOW


@pytest.mark.parametrize(
    ("alg", "params", "registered_alg"),
    [
        ("EdDSA", {"kty": "OKP", "crv": "Ed25519"}, "Ed25519"),
        ("ES256", {"kty": "EC", "crv": "P-256"}, "ES256"),
    ],
)
def test_jwcrypto_token_from_another_key_is_bad_signature(alg, params, registered_alg):
    kid = "core-ledger-jwcrypto"
    signer = jwcrypto_jwk.JWK.generate(kid=kid, **params)
    registered = jwcrypto_jwk.JWK.generate(kid=kid, **params)
    payload = transaction_payloads(1, "core-ledger", seed=11, now=INTEROP_NOW)[0]
    raw = jwcrypto_token(signer, alg, kid, json.dumps(payload).encode("utf-8"))
    record = KeyRecord(kid=kid, source="core-ledger", alg=registered_alg,
                       public_jwk=registered.export_public(as_dict=True))
    with pytest.raises(Rejection) as info:
        verify_event(raw, {kid: record}, INTEROP_NOW, INTEROP_POLICY)
    assert info.value.reason is RejectReason.BAD_SIGNATURE


@pytest.mark.parametrize("alg", ["Ed25519", "ES256"])
def test_project_token_verifies_with_jwcrypto(alg):
    key = generate_key("core-ledger", alg)
    raw = key.sign(b'{"hello":"world"}', "attest.transaction.v1")
    token = jwcrypto_jws.JWS()
    token.deserialize(raw.decode("ascii"))
    token.verify(jwcrypto_jwk.JWK(**key.public_jwk))
    assert token.payload == b'{"hello":"world"}'
    assert token.jose_header == {"alg": alg, "kid": key.kid, "typ": "attest.transaction.v1"}
