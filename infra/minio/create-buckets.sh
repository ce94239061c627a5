#!/bin/sh
# minio-init (docker-compose one-shot, minio/mc image): the buckets for MLflow artifacts (versioned) and datasets,
# both private; an application user (KHMER_OCR_S3_ACCESS_KEY) limited to those two buckets, used by MLflow, Airflow
# and training instead of the root credentials. Idempotent.
set -eu
: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${KHMER_OCR_S3_ACCESS_KEY:?}" "${KHMER_OCR_S3_SECRET_KEY:?}"
: "${MLFLOW_BUCKET:?}" "${DATA_BUCKET:?}"

mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
for bucket in "$MLFLOW_BUCKET" "$DATA_BUCKET"; do
  mc mb --ignore-existing "local/$bucket"
  mc anonymous set none "local/$bucket"
done
# Versioning on the MLflow bucket: a deleted or overwritten model artifact can be restored.
mc version enable "local/$MLFLOW_BUCKET"

cat > /tmp/khmer-ocr-rw.json <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
     "Resource": ["arn:aws:s3:::$MLFLOW_BUCKET", "arn:aws:s3:::$DATA_BUCKET"]},
    {"Effect": "Allow",
     "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts"],
     "Resource": ["arn:aws:s3:::$MLFLOW_BUCKET/*", "arn:aws:s3:::$DATA_BUCKET/*"]}
  ]
}
JSON
mc admin policy create local khmer-ocr-rw /tmp/khmer-ocr-rw.json
mc admin user add local "$KHMER_OCR_S3_ACCESS_KEY" "$KHMER_OCR_S3_SECRET_KEY"
if ! mc admin user info local "$KHMER_OCR_S3_ACCESS_KEY" | grep -q khmer-ocr-rw; then
  mc admin policy attach local khmer-ocr-rw --user "$KHMER_OCR_S3_ACCESS_KEY"
fi
echo "minio-init: buckets $MLFLOW_BUCKET and $DATA_BUCKET ready for $KHMER_OCR_S3_ACCESS_KEY"
