//! Access control lists, as far as Hamster has them: every bucket and object is private to the
//! cluster's owner. GET `?acl` answers that policy; PUT `?acl` accepts only what restates it
//! (an owner-only canned ACL, or a policy granting FULL_CONTROL to the owner alone) and answers
//! NotImplemented for anything that would share access, rather than pretending to apply it.
//! Canned ACL and grant headers are judged for every request, this one included, by
//! `hamster_protocol::unhonoured` before the operation runs; only the body is judged here.

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use hamster_protocol::names::validate_key;
use hamster_protocol::s3err::{S3Error, S3ErrorCode};
use hamster_protocol::xml::escape;

use super::body::BodyReader;
use super::exchange::Exchange;
use super::meta::{bucket, read};
use super::request::header;
use super::response::{builder, xml_ok};
use super::XML_BODY_BYTES_MAX;
use crate::raft::node::GetObject;

/// The display name shown for the owner, as in listings.
const OWNER_DISPLAY_NAME: &str = "hamster";

/// The refusal for any ACL that would grant access to someone other than the owner.
fn not_private() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::NotImplemented,
        "Hamster supports only the private ACL (FULL_CONTROL for the owner); grants to others, public-read and the other canned ACLs are not implemented",
    )
}

/// The AccessControlPolicy document: the owner with FULL_CONTROL and nothing else.
fn private_policy_xml(owner_id: &str) -> String {
    let id = escape(owner_id);
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <AccessControlPolicy xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Owner><ID>{id}</ID><DisplayName>{OWNER_DISPLAY_NAME}</DisplayName></Owner>\
         <AccessControlList><Grant>\
         <Grantee xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"CanonicalUser\">\
         <ID>{id}</ID><DisplayName>{OWNER_DISPLAY_NAME}</DisplayName></Grantee>\
         <Permission>FULL_CONTROL</Permission></Grant></AccessControlList>\
         </AccessControlPolicy>"
    )
}

/// Checks that the addressed bucket (and object, for object ACLs) exists.
async fn resolve(x: &Exchange, object: bool) -> Result<(), S3Error> {
    let bucket_name = x.target.bucket.as_deref().unwrap_or_default();
    if let Some(v) = x.target.param("versionId") {
        if !object || v != "null" {
            return Err(S3Error::new(S3ErrorCode::NoSuchVersion));
        }
    }
    if !object {
        bucket(&x.state, bucket_name).await?;
        return Ok(());
    }
    let key = x.target.key.as_deref().unwrap_or_default();
    validate_key(key)?;
    let list = read(
        &x.state,
        GetObject {
            bucket: bucket_name.to_string(),
            key: key.to_string(),
        },
    )
    .await?;
    if list.as_ref().and_then(|l| l.current()).is_none() {
        bucket(&x.state, bucket_name).await?;
        return Err(S3Error::new(S3ErrorCode::NoSuchKey));
    }
    Ok(())
}

/// GetBucketAcl and GetObjectAcl.
pub async fn get_acl(x: &Exchange, object: bool) -> Result<HttpResponse, S3Error> {
    resolve(x, object).await?;
    Ok(xml_ok(&x.echo, private_policy_xml(&x.state.owner_id)))
}

/// PutBucketAcl and PutObjectAcl: accepted only when the ACL asked for is the private one. A
/// sharing canned ACL or a grant header never gets here (see the module header).
pub async fn put_acl(
    x: &Exchange,
    object: bool,
    payload: Payload,
) -> Result<HttpResponse, S3Error> {
    let mut body = BodyReader::new(
        payload,
        &x.auth.payload,
        &x.auth.signing,
        x.state.config.body_idle,
    );
    let raw = body.read_all(XML_BODY_BYTES_MAX).await?;
    resolve(x, object).await?;
    let has_body = !raw.iter().all(u8::is_ascii_whitespace);
    match header(&x.req, "x-amz-acl") {
        Some(_) if has_body => {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                "Specify an ACL either with the x-amz-acl header or in the request body, not both",
            ))
        }
        Some(_) => {}
        None if has_body => check_policy_body(&raw, &x.state.owner_id)?,
        None => {}
    }
    Ok(builder(StatusCode::OK, &x.echo).finish())
}

/// One element of a policy body as the scanner sees it.
#[derive(Debug, PartialEq, Eq)]
struct Leaf {
    name: String,
    text: String,
}

/// Local name of a tag (`ns:Name attr="…"` → `Name`).
fn local_name(tag: &str) -> &str {
    let name = tag.split_whitespace().next().unwrap_or("");
    name.rsplit(':').next().unwrap_or(name)
}

/// Splits an AccessControlPolicy into its root name, its text-bearing elements in order, and
/// the number of `<Grant>` elements. A small scanner is enough here: the body's only use is
/// to decide whether it restates the private policy, and anything it cannot read is refused.
fn scan_policy(body: &str) -> Result<(String, Vec<Leaf>, usize), S3Error> {
    let malformed = || {
        S3Error::with_message(
            S3ErrorCode::MalformedXML,
            "The XML you provided was not well-formed or did not validate against our published schema",
        )
    };
    let mut rest = body.trim();
    let mut root = None;
    let mut stack: Vec<String> = Vec::new();
    let mut leaves = Vec::new();
    let mut grants = 0;
    let mut text = String::new();
    while !rest.is_empty() {
        let Some(open) = rest.find('<') else {
            return Err(malformed());
        };
        text.push_str(&rest[..open]);
        rest = &rest[open..];
        let close = rest.find('>').ok_or_else(malformed)?;
        let tag = &rest[1..close];
        rest = &rest[close + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            if tag.starts_with("!DOCTYPE") || tag.starts_with("![CDATA[") {
                return Err(malformed());
            }
            continue;
        }
        if let Some(end) = tag.strip_prefix('/') {
            let name = stack.pop().ok_or_else(malformed)?;
            if name != local_name(end) {
                return Err(malformed());
            }
            let t = text.trim();
            if !t.is_empty() {
                leaves.push(Leaf {
                    name,
                    text: t.to_string(),
                });
            }
        } else {
            let empty = tag.ends_with('/');
            let name = local_name(tag.trim_end_matches('/')).to_string();
            if stack.is_empty() {
                if root.is_some() {
                    return Err(malformed());
                }
                root = Some(name.clone());
            }
            if name == "Grant" {
                grants += 1;
            }
            if !empty {
                stack.push(name);
            }
        }
        text.clear();
    }
    if !stack.is_empty() {
        return Err(malformed());
    }
    Ok((root.ok_or_else(malformed)?, leaves, grants))
}

/// Accepts a policy body only if it grants FULL_CONTROL to the owner and nothing else.
fn check_policy_body(raw: &[u8], owner_id: &str) -> Result<(), S3Error> {
    let body = std::str::from_utf8(raw).map_err(|_| S3Error::new(S3ErrorCode::MalformedXML))?;
    let (root, leaves, grants) = scan_policy(body)?;
    if root != "AccessControlPolicy" {
        return Err(S3Error::new(S3ErrorCode::MalformedXML));
    }
    let permissions: Vec<&Leaf> = leaves.iter().filter(|l| l.name == "Permission").collect();
    let private = grants >= 1
        && permissions.len() == grants
        && permissions.iter().all(|p| p.text == "FULL_CONTROL")
        && leaves.iter().all(|l| match l.name.as_str() {
            "ID" => l.text == owner_id,
            "URI" | "EmailAddress" => false,
            _ => true,
        });
    if !private {
        return Err(not_private());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(grantee_id: &str, permission: &str) -> String {
        format!(
            "<AccessControlPolicy xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <Owner><ID>owner</ID></Owner><AccessControlList><Grant>\
             <Grantee xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"CanonicalUser\">\
             <ID>{grantee_id}</ID></Grantee><Permission>{permission}</Permission></Grant>\
             </AccessControlList></AccessControlPolicy>"
        )
    }

    #[test]
    fn our_own_policy_is_accepted_back() {
        let ours = private_policy_xml("owner");
        assert!(check_policy_body(ours.as_bytes(), "owner").is_ok());
        assert!(check_policy_body(policy("owner", "FULL_CONTROL").as_bytes(), "owner").is_ok());
    }

    #[test]
    fn sharing_policies_are_not_implemented() {
        for body in [
            policy("someone-else", "FULL_CONTROL"),
            policy("owner", "READ"),
            private_policy_xml("owner").replace(
                "</AccessControlList>",
                "<Grant><Grantee xsi:type=\"Group\"><URI>http://acs.amazonaws.com/groups/global/AllUsers</URI></Grantee><Permission>READ</Permission></Grant></AccessControlList>",
            ),
        ] {
            let e = check_policy_body(body.as_bytes(), "owner").unwrap_err();
            assert_eq!(e.code, S3ErrorCode::NotImplemented, "{body}");
        }
    }

    #[test]
    fn broken_bodies_are_malformed() {
        for body in ["<AccessControlPolicy>", "not xml", "<A></B>", "<Other/>"] {
            let e = check_policy_body(body.as_bytes(), "owner").unwrap_err();
            assert_eq!(e.code, S3ErrorCode::MalformedXML, "{body}");
        }
    }
}
