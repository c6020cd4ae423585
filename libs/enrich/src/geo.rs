//! IP → country, region, city and coordinates from MaxMind-format files.
//!
//! Two record layouts are read: MaxMind's GeoIP2/GeoLite2-City
//! (`country.iso_code`, `subdivisions[0].names.en`, `city.names.en`,
//! `location.latitude/longitude`) and the flat one of the ip-location-db
//! files (`country_code`, `state1`, `city`, `latitude`, `longitude`), which
//! come as separate IPv4 and IPv6 files; several files can be given and the
//! first that knows an address answers.

use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;

use crate::EnrichError;

/// Where an address is; its names borrow from the database.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Location<'a> {
    pub country: &'a str,
    pub region: &'a str,
    pub city: &'a str,
    pub latitude: f64,
    pub longitude: f64,
}

/// One or more opened databases.
pub struct GeoIp {
    readers: Vec<maxminddb::Reader<Vec<u8>>>,
}

/// A place of the GeoIP2 layout: its code and its English name (the
/// names in other languages are skipped, not read).
#[derive(Deserialize)]
struct Place<'a> {
    #[serde(borrow, default)]
    names: English<'a>,
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Default, Deserialize)]
struct English<'a> {
    #[serde(borrow, default)]
    en: Option<&'a str>,
}

impl<'a> Place<'a> {
    fn english(&self) -> &'a str {
        self.names.en.unwrap_or_default()
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CityField<'a> {
    Flat(&'a str),
    Nested(#[serde(borrow)] Place<'a>),
}

#[derive(Deserialize)]
struct Coordinates {
    latitude: Option<Degrees>,
    longitude: Option<Degrees>,
}

/// A coordinate stored as `double` (MaxMind) or `float` (ip-location-db);
/// the decoder is strict about the difference, so accept both.
#[derive(Clone, Copy)]
struct Degrees(f64);

impl<'de> Deserialize<'de> for Degrees {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Degrees;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of degrees")
            }
            fn visit_f64<E>(self, v: f64) -> Result<Degrees, E> {
                Ok(Degrees(v))
            }
            fn visit_f32<E>(self, v: f32) -> Result<Degrees, E> {
                Ok(Degrees(f64::from(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Degrees, E> {
                Ok(Degrees(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Degrees, E> {
                Ok(Degrees(v as f64))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// The union of both layouts; each file fills its own half.
#[derive(Deserialize)]
struct Record<'a> {
    // GeoIP2 / GeoLite2-City
    #[serde(borrow)]
    country: Option<Place<'a>>,
    #[serde(borrow)]
    subdivisions: Option<Vec<Place<'a>>>,
    location: Option<Coordinates>,
    #[serde(borrow)]
    city: Option<CityField<'a>>,
    // ip-location-db
    country_code: Option<&'a str>,
    state1: Option<&'a str>,
    latitude: Option<Degrees>,
    longitude: Option<Degrees>,
}

impl<'a> From<Record<'a>> for Location<'a> {
    fn from(r: Record<'a>) -> Location<'a> {
        let city = match r.city {
            Some(CityField::Flat(name)) => name,
            Some(CityField::Nested(place)) => place.english(),
            None => "",
        };
        let coordinates = r.location.unwrap_or(Coordinates {
            latitude: r.latitude,
            longitude: r.longitude,
        });
        Location {
            country: r
                .country
                .and_then(|c| c.iso_code)
                .or(r.country_code)
                .unwrap_or_default(),
            region: r
                .subdivisions
                .and_then(|s| s.first().map(Place::english))
                .or(r.state1)
                .unwrap_or_default(),
            city,
            latitude: coordinates.latitude.map_or(0.0, |d| d.0),
            longitude: coordinates.longitude.map_or(0.0, |d| d.0),
        }
    }
}

/// Addresses that never have a location: private, loopback, link-local, …
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

impl GeoIp {
    /// Opens every file; fails when one cannot be read as a MaxMind database.
    pub fn open(paths: &[impl AsRef<Path>]) -> Result<Self, EnrichError> {
        let readers = paths
            .iter()
            .map(|p| {
                maxminddb::Reader::open_readfile(p.as_ref()).map_err(|e| EnrichError::Format {
                    path: p.as_ref().to_owned(),
                    message: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GeoIp { readers })
    }

    /// The location of `ip`, or `None` for private addresses and unknown ones.
    pub fn lookup(&self, ip: IpAddr) -> Option<Location<'_>> {
        if !is_public(ip) {
            return None;
        }
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.readers.iter().find_map(|reader| {
            // An IPv6 address in an IPv4-only file is an error, not a miss.
            let found = reader.lookup(ip).ok()?;
            found.decode::<Record>().ok().flatten().map(Location::from)
        })
    }
}

#[cfg(test)]
pub(crate) mod mmdb_writer;

#[cfg(test)]
mod tests {
    use super::mmdb_writer::{Value, write_mmdb};
    use super::*;

    fn map(pairs: Vec<(&str, Value)>) -> Value {
        Value::Map(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }
    fn s(v: &str) -> Value {
        Value::Str(v.to_owned())
    }
    fn en(name: &str) -> Value {
        map(vec![("names", map(vec![("en", s(name)), ("de", s("x"))]))])
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("geo-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(format!("{name}.mmdb"))
    }

    #[test]
    fn reads_the_geolite2_city_layout() {
        let record = map(vec![
            (
                "country",
                map(vec![
                    ("iso_code", s("KR")),
                    ("names", map(vec![("en", s("South Korea"))])),
                ]),
            ),
            ("subdivisions", Value::Array(vec![en("Seoul")])),
            ("city", en("Seoul")),
            (
                "location",
                map(vec![
                    ("latitude", Value::Double(37.5665)),
                    ("longitude", Value::Double(126.978)),
                ]),
            ),
        ]);
        let path = temp("geolite");
        write_mmdb(&path, 4, "GeoLite2-City", &[([1, 2, 3, 0], 24, record)]).unwrap();
        let geo = GeoIp::open(&[&path]).unwrap();
        let loc = geo.lookup("1.2.3.77".parse().unwrap()).unwrap();
        assert_eq!(
            loc,
            Location {
                country: "KR",
                region: "Seoul",
                city: "Seoul",
                latitude: 37.5665,
                longitude: 126.978
            }
        );
        assert_eq!(geo.lookup("1.2.4.1".parse().unwrap()), None);
        // An IPv4-mapped IPv6 address is the IPv4 address.
        assert_eq!(
            geo.lookup("::ffff:1.2.3.9".parse().unwrap()).unwrap().city,
            "Seoul"
        );
    }

    #[test]
    fn reads_the_flat_ip_location_db_layout_over_several_files() {
        let v4 = temp("flat4");
        let record = map(vec![
            ("country_code", s("DE")),
            ("state1", s("Berlin")),
            ("city", s("Berlin")),
            ("latitude", Value::Float(52.52)),
            ("longitude", Value::Float(13.405)),
        ]);
        write_mmdb(&v4, 4, "dbip-city-ipv4", &[([5, 6, 0, 0], 16, record)]).unwrap();
        let missing = temp("empty");
        write_mmdb(&missing, 4, "empty", &[]).unwrap();
        let geo = GeoIp::open(&[&missing, &v4]).unwrap();
        let loc = geo.lookup("5.6.200.1".parse().unwrap()).unwrap();
        assert_eq!(
            (loc.country, loc.region, loc.city),
            ("DE", "Berlin", "Berlin")
        );
        assert!((loc.latitude - 52.52).abs() < 1e-4 && (loc.longitude - 13.405).abs() < 1e-4);
        // IPv6 lookups in IPv4-only files miss instead of failing.
        assert_eq!(geo.lookup("2a00:1450::1".parse().unwrap()), None);
    }

    #[test]
    fn private_and_loopback_addresses_have_no_location() {
        let path = temp("all");
        write_mmdb(
            &path,
            4,
            "all",
            &[
                ([0, 0, 0, 0], 1, map(vec![("country_code", s("XX"))])),
                ([128, 0, 0, 0], 1, map(vec![("country_code", s("XX"))])),
            ],
        )
        .unwrap();
        let geo = GeoIp::open(&[&path]).unwrap();
        for ip in [
            "10.1.2.3",
            "192.168.1.1",
            "127.0.0.1",
            "172.16.0.1",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
        ] {
            assert_eq!(geo.lookup(ip.parse().unwrap()), None, "{ip}");
        }
        assert_eq!(
            geo.lookup("8.8.8.8".parse().unwrap()).unwrap().country,
            "XX"
        );
    }

    #[test]
    fn a_file_that_is_not_a_database_is_an_error() {
        let path = temp("bad");
        std::fs::write(&path, b"not a database").unwrap();
        assert!(GeoIp::open(&[&path]).is_err());
    }
}
