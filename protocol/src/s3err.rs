//! The S3 error vocabulary: every error Hamster answers on the S3 wire, with its code and HTTP
//! status in one total `match`, so the wire mapping lives in exactly one place.

use std::fmt;

/// An S3 error code as AWS spells it on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[allow(missing_docs)] // each variant is the AWS error code of the same name
pub enum S3ErrorCode {
    AccessDenied,
    AuthorizationHeaderMalformed,
    AuthorizationQueryParametersError,
    BadDigest,
    BucketAlreadyExists,
    BucketAlreadyOwnedByYou,
    BucketNotEmpty,
    EntityTooLarge,
    EntityTooSmall,
    IncompleteBody,
    InternalError,
    InvalidAccessKeyId,
    InvalidArgument,
    InvalidBucketName,
    InvalidDigest,
    InvalidPart,
    InvalidPartOrder,
    InvalidRange,
    InvalidRequest,
    KeyTooLongError,
    MalformedXML,
    MalformedPOSTRequest,
    InvalidPolicyDocument,
    MethodNotAllowed,
    MissingContentLength,
    MissingSecurityHeader,
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    NoSuchVersion,
    NotImplemented,
    NotModified,
    PreconditionFailed,
    RequestHeaderSectionTooLarge,
    RequestTimeTooSkewed,
    RequestTimeout,
    ServiceUnavailable,
    InsufficientStorage,
    SignatureDoesNotMatch,
    SlowDown,
    XAmzContentSHA256Mismatch,
    ExpiredToken,
    MetadataTooLarge,
    InvalidObjectState,
    InvalidStorageClass,
}

impl S3ErrorCode {
    /// The code string as it appears in `<Code>` of the error body.
    pub fn code(self) -> &'static str {
        use S3ErrorCode::*;
        match self {
            AccessDenied => "AccessDenied",
            AuthorizationHeaderMalformed => "AuthorizationHeaderMalformed",
            AuthorizationQueryParametersError => "AuthorizationQueryParametersError",
            BadDigest => "BadDigest",
            BucketAlreadyExists => "BucketAlreadyExists",
            BucketAlreadyOwnedByYou => "BucketAlreadyOwnedByYou",
            BucketNotEmpty => "BucketNotEmpty",
            EntityTooLarge => "EntityTooLarge",
            EntityTooSmall => "EntityTooSmall",
            IncompleteBody => "IncompleteBody",
            InternalError => "InternalError",
            InvalidAccessKeyId => "InvalidAccessKeyId",
            InvalidArgument => "InvalidArgument",
            InvalidBucketName => "InvalidBucketName",
            InvalidDigest => "InvalidDigest",
            InvalidPart => "InvalidPart",
            InvalidPartOrder => "InvalidPartOrder",
            InvalidRange => "InvalidRange",
            InvalidRequest => "InvalidRequest",
            KeyTooLongError => "KeyTooLongError",
            MalformedXML => "MalformedXML",
            MalformedPOSTRequest => "MalformedPOSTRequest",
            InvalidPolicyDocument => "InvalidPolicyDocument",
            MethodNotAllowed => "MethodNotAllowed",
            MissingContentLength => "MissingContentLength",
            MissingSecurityHeader => "MissingSecurityHeader",
            NoSuchBucket => "NoSuchBucket",
            NoSuchKey => "NoSuchKey",
            NoSuchUpload => "NoSuchUpload",
            NoSuchVersion => "NoSuchVersion",
            NotImplemented => "NotImplemented",
            NotModified => "NotModified",
            PreconditionFailed => "PreconditionFailed",
            RequestHeaderSectionTooLarge => "RequestHeaderSectionTooLarge",
            RequestTimeTooSkewed => "RequestTimeTooSkewed",
            RequestTimeout => "RequestTimeout",
            ServiceUnavailable => "ServiceUnavailable",
            InsufficientStorage => "InsufficientStorage",
            SignatureDoesNotMatch => "SignatureDoesNotMatch",
            SlowDown => "SlowDown",
            XAmzContentSHA256Mismatch => "XAmzContentSHA256Mismatch",
            ExpiredToken => "ExpiredToken",
            MetadataTooLarge => "MetadataTooLarge",
            InvalidObjectState => "InvalidObjectState",
            InvalidStorageClass => "InvalidStorageClass",
        }
    }

    /// The HTTP status AWS answers with for this code.
    pub fn status(self) -> u16 {
        use S3ErrorCode::*;
        match self {
            NotModified => 304,
            AuthorizationHeaderMalformed
            | AuthorizationQueryParametersError
            | BadDigest
            | EntityTooLarge
            | EntityTooSmall
            | IncompleteBody
            | InvalidArgument
            | InvalidBucketName
            | InvalidDigest
            | InvalidPart
            | InvalidPartOrder
            | InvalidRequest
            | KeyTooLongError
            | MalformedXML
            | MalformedPOSTRequest
            | InvalidPolicyDocument
            | MetadataTooLarge
            | RequestHeaderSectionTooLarge
            | RequestTimeout
            | XAmzContentSHA256Mismatch
            | ExpiredToken
            | MissingSecurityHeader
            | InvalidStorageClass => 400,
            AccessDenied
            | InvalidAccessKeyId
            | RequestTimeTooSkewed
            | SignatureDoesNotMatch
            | InvalidObjectState => 403,
            NoSuchBucket | NoSuchKey | NoSuchUpload | NoSuchVersion => 404,
            MethodNotAllowed => 405,
            BucketAlreadyExists | BucketAlreadyOwnedByYou | BucketNotEmpty => 409,
            MissingContentLength => 411,
            PreconditionFailed => 412,
            InvalidRange => 416,
            InternalError => 500,
            NotImplemented => 501,
            ServiceUnavailable | SlowDown => 503,
            InsufficientStorage => 507,
        }
    }

    /// A human sentence for the `<Message>` element when the caller has nothing more specific.
    pub fn default_message(self) -> &'static str {
        use S3ErrorCode::*;
        match self {
            AccessDenied => "Access Denied",
            AuthorizationHeaderMalformed => "The authorization header is malformed.",
            AuthorizationQueryParametersError => "The query-string authorization parameters are malformed.",
            BadDigest => "The Content-MD5 or checksum you specified did not match what we received.",
            BucketAlreadyExists => "The requested bucket name is not available.",
            BucketAlreadyOwnedByYou => "Your previous request to create the named bucket succeeded and you already own it.",
            BucketNotEmpty => "The bucket you tried to delete is not empty.",
            EntityTooLarge => "Your proposed upload exceeds the maximum allowed object size.",
            EntityTooSmall => "Your proposed upload is smaller than the minimum allowed object size.",
            IncompleteBody => "You did not provide the number of bytes specified by the Content-Length HTTP header.",
            InternalError => "We encountered an internal error. Please try again.",
            InvalidAccessKeyId => "The AWS Access Key Id you provided does not exist in our records.",
            InvalidArgument => "Invalid Argument",
            InvalidBucketName => "The specified bucket is not valid.",
            InvalidDigest => "The Content-MD5 you specified is not valid.",
            InvalidPart => "One or more of the specified parts could not be found.",
            InvalidPartOrder => "The list of parts was not in ascending order.",
            InvalidRange => "The requested range is not satisfiable",
            InvalidRequest => "Invalid Request",
            KeyTooLongError => "Your key is too long",
            MalformedXML => "The XML you provided was not well-formed or did not validate against our published schema.",
            MalformedPOSTRequest => "The body of your POST request is not well-formed multipart/form-data.",
            InvalidPolicyDocument => "The content of the form does not meet the conditions specified in the policy document.",
            MethodNotAllowed => "The specified method is not allowed against this resource.",
            MissingContentLength => "You must provide the Content-Length HTTP header.",
            MissingSecurityHeader => "Your request is missing a required header.",
            NoSuchBucket => "The specified bucket does not exist",
            NoSuchKey => "The specified key does not exist.",
            NoSuchUpload => "The specified multipart upload does not exist.",
            NoSuchVersion => "The specified version does not exist.",
            NotImplemented => "A header or query you provided implies functionality that is not implemented.",
            NotModified => "Not Modified",
            PreconditionFailed => "At least one of the pre-conditions you specified did not hold",
            RequestHeaderSectionTooLarge => "Your request header section exceeds the maximum allowed size.",
            RequestTimeTooSkewed => "The difference between the request time and the server's time is too large.",
            RequestTimeout => "Your socket connection to the server was not read from or written to within the timeout period.",
            ServiceUnavailable => "Please reduce your request rate.",
            InsufficientStorage => "The node does not have enough free disk space to store this write; delete objects or add capacity.",
            SignatureDoesNotMatch => "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
            SlowDown => "Please reduce your request rate.",
            XAmzContentSHA256Mismatch => "The provided 'x-amz-content-sha256' header does not match what was computed.",
            ExpiredToken => "The provided token has expired.",
            MetadataTooLarge => "Your metadata headers exceed the maximum allowed metadata size.",
            InvalidObjectState => "The operation is not valid for the current state of the object.",
            InvalidStorageClass => "The storage class you specified is not valid",
        }
    }
}

impl fmt::Display for S3ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An S3 error with an optional specific message; what a handler returns on failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Error {
    /// The S3 code (and through it the HTTP status).
    pub code: S3ErrorCode,
    /// The `<Message>` text; `None` means the code's default message.
    pub message: Option<String>,
}

impl S3Error {
    /// An error with the code's default message.
    pub fn new(code: S3ErrorCode) -> Self {
        S3Error {
            code,
            message: None,
        }
    }

    /// An error with a specific message.
    pub fn with_message(code: S3ErrorCode, message: impl Into<String>) -> Self {
        S3Error {
            code,
            message: Some(message.into()),
        }
    }

    /// The message to send: the specific one if any, else the default.
    pub fn message(&self) -> &str {
        self.message
            .as_deref()
            .unwrap_or(self.code.default_message())
    }
}

impl From<S3ErrorCode> for S3Error {
    fn from(code: S3ErrorCode) -> Self {
        S3Error::new(code)
    }
}

impl fmt::Display for S3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.code(), self.message())
    }
}

impl std::error::Error for S3Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_match_aws() {
        assert_eq!(S3ErrorCode::NoSuchKey.status(), 404);
        assert_eq!(S3ErrorCode::SignatureDoesNotMatch.status(), 403);
        assert_eq!(S3ErrorCode::BucketNotEmpty.status(), 409);
        assert_eq!(S3ErrorCode::InvalidRange.status(), 416);
        assert_eq!(S3ErrorCode::NotImplemented.status(), 501);
        assert_eq!(S3ErrorCode::SlowDown.status(), 503);
        assert_eq!(S3ErrorCode::InsufficientStorage.status(), 507);
        assert_eq!(S3ErrorCode::RequestTimeout.status(), 400);
        assert_eq!(S3ErrorCode::RequestHeaderSectionTooLarge.status(), 400);
        assert_eq!(
            S3Error::new(S3ErrorCode::NoSuchBucket).message(),
            "The specified bucket does not exist"
        );
    }
}
