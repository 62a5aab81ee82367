"""ISO 4217 alphabetic currency codes accepted in events."""

from __future__ import annotations

# Active ISO 4217 codes, including fund and precious-metal codes, plus codes
# withdrawn since 2023 (ANG, CUC, HRK, SLL, ZWL) that late or replayed data may
# still carry. XTS (testing) and XXX (no currency) are left out.
ISO_4217_CODES: frozenset[str] = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV
    BRL BSD BTN BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE
    CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD
    HNL HRK HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD
    KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN
    MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD
    RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS
    TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST
    XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XUA YER ZAR ZMW ZWG
    ZWL
    """.split()
)


def check_currency(code: str) -> str:
    """Return ``code`` if it is an ISO 4217 code; raise ValueError naming it otherwise."""
    if code not in ISO_4217_CODES:
        raise ValueError(f"unknown ISO 4217 currency code {code!r}; use an uppercase code such as EUR or USD")
    return code
